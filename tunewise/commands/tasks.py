"""`tunewise tasks`: list the built-in tasks and probes; write a task's train/validation/test files.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunewise.userfiles import check_count

tasks_app = typer.Typer(help="Built-in task generators (structured, classify, sql, math) and retention probes.",
                        no_args_is_help=True)


@tasks_app.command("list")
def list_tasks(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """The built-in tasks (with their scorer) and retention probes."""
    from tunewise.tasks import TASKS
    from tunewise.tasks.probes import BUILTIN_PROBES

    rows = [{"name": s.name, "kind": "task", "scorer": s.scorer, "description": s.description}
            for s in TASKS.values()]
    rows += [{"name": n, "kind": "probe", "scorer": "loss" if n == "lm" else "number", "description": d}
             for n, d in BUILTIN_PROBES.items()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="tunewise tasks")
    for col in ("name", "kind", "scorer", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(escape(r[c]) for c in ("name", "kind", "scorer", "description")))
    Console().print(table)


@tasks_app.command("make")
def make(
    name: str = typer.Argument(..., help="Task: structured, classify, sql, math, math-hard or math-chain."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for train/validation/test.jsonl and meta.json."),
    train: int = typer.Option(1000, "--train", help="Training examples."),
    validation: int = typer.Option(100, "--validation", help="Validation examples."),
    test: int = typer.Option(200, "--test", help="Test examples."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same files (byte for byte)."),
    fmt: str = typer.Option(None, "--format", help="prompt_completion (continuation, for base models) or chat "
                            "(the task's instruction as a user turn, for instruct models); default: chat when "
                            "--base has a chat template, else prompt_completion."),
    base: str = typer.Option("tiny", "--base", help="The model the task is for (picks the default --format)."),
    noise: float = typer.Option(0.0, "--noise", help="Share of the training split made bad (wrong answers, "
                                "truncated answers, duplicates, off-task records in equal numbers), each bad line "
                                "listed in meta.json's noise.bad: a set to measure `data select` against."),
    as_json: bool = typer.Option(False, "--json", help="Print the task metadata as JSON."),
    force: bool = typer.Option(False, "--force", help="Write into --out even when it holds other files or another "
                               "task (the task's own files are replaced)."),
) -> None:
    """Write a built-in task's splits in the trainer's record format (prompt/completion or chat), plus meta.json."""
    from tunewise.ownership import claim_dir
    from tunewise.tasks import get_task, make_task, task_format_for
    from tunewise.tasks.noise import check_share

    get_task(name)
    check_share(noise)
    for flag, n in (("--train", train), ("--validation", validation), ("--test", test)):
        check_count(n, flag)
    claim_dir(out, "task", name, force=force)
    meta = make_task(name, out, {"train": train, "validation": validation, "test": test}, seed,
                     fmt or task_format_for(base), noise=noise)
    if as_json:
        typer.echo(json.dumps({"out": str(out), **meta}, indent=2))
        return
    sizes = ", ".join(f"{k} {v}" for k, v in meta["sizes"].items())
    typer.echo(f"wrote {name} to {out}: {sizes} (seed {seed}); scorer {meta['scorer']}")
    if "noise" in meta:
        kinds = ", ".join(f"{k} {v}" for k, v in meta["noise"]["kinds"].items())
        typer.echo(f"  noise:  {meta['noise']['bad_records']} bad training records ({kinds}), lines in meta.json")
    if "db" in meta:
        typer.echo(f"  SQLite database: {out / meta['db']}")
    typer.echo(f"  train:  tunewise train with data.train={out / 'train.jsonl'}")
    typer.echo(f"  eval:   tunewise eval RUN --data {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(tasks_app, name="tasks")
