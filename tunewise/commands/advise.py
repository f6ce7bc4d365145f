"""`tunewise advise`: which method (LoRA, QLoRA or full), why, with what settings, and a ready run config.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunewise.commands.pilot import run_pilot_command
from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_text
from tunewise.inputs import problems_of, unknown_keys
from tunewise.userfiles import load_yaml

DATA_HELP = ("Training data (a file, a save_to_disk folder or a dataset id): its size, duplicates and token lengths "
             "(with --model's tokenizer) shape the advice.")
PRIORITIES = {"accuracy": "accuracy_priority", "time": "time_bottleneck", "iteration": "fast_iteration"}


def read_yaml(path: str) -> tuple[dict, list[str]]:
    """Inputs from a YAML file (keys as the flags, with underscores); unknown keys and values of the wrong type are
    problems (tunewise.inputs' words, as for every config), not ignored; null is a key not given."""
    from tunewise.advise import AdviseInput

    try:
        data = load_yaml(path, "--from file") or {}
    except TunewiseError as e:
        return {}, [e.message]
    if not isinstance(data, dict):
        return {}, [f"{path}: expected a mapping of keys to values"]
    problems = []
    values = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        name = "dataset" if name == "data" else name  # the file's key may follow the --data flag
        if name == "priority" or value is None:
            values[name] = value
            continue
        try:
            AdviseInput.model_validate({name: value})
        except ValidationError as e:
            problems += [f"{path}: {p}" for p in unknown_keys({name: value}, AdviseInput) + problems_of(e)]
        else:
            values[name] = value
    return {k: v for k, v in values.items() if v is not None}, problems


def apply_priority(values: dict, priority: str | list | None, problems: list[str]) -> None:
    if not priority:
        return
    items = priority if isinstance(priority, list) else str(priority).split(",")
    for item in (str(i).strip().lower() for i in items if str(i).strip()):
        if item in PRIORITIES:
            values[PRIORITIES[item]] = True
        else:
            problems.append(f"priority: unknown '{item}'; use {', '.join(PRIORITIES)}")


def render(advice) -> None:
    con = Console()
    a = advice.as_dict()
    head = a["method"].upper() if a["method"] else "DOES NOT FIT"
    con.print(f"[bold]Recommendation: {head}[/bold]  (rules prefer {a['preferred']}; scores "
              + ", ".join(f"{m} {s:+g}" for m, s in a["scores"].items()) + ")")
    con.print(escape(a["decision"]))
    for w in a["warnings"]:
        con.print(f"[bold red]{escape(w)}[/bold red]")
    con.print("\n[bold]Why[/bold]")
    for r in a["reasons"]:
        ev = ", ".join(e["id"] for e in r["evidence"])
        con.print(escape(f"  + [{r['rule']}, {r['weight']:+g}] {r['reason']}") + f" [dim]({ev})[/dim]")
    for n in a["scale_notes"]:  # the evidence nearest the user's model, when it is not the published one
        con.print(f"[bold yellow]{escape('  ! ' + n['text'])}[/bold yellow]")
    if a["counter_reasons"]:
        con.print("[bold]Against / for other methods[/bold]")
        for r in a["counter_reasons"]:
            ev = ", ".join(e["id"] for e in r["evidence"])
            target = f" for {r['for']}" if "for" in r else ""
            con.print(escape(f"  - [{r['rule']}, {r['weight']:+g}{target}] {r['reason']}") + f" [dim]({ev})[/dim]")
    t = Table(title="estimate on the stated hardware (per GPU)")
    several = any(e.get("distributed") for e in a["estimates"].values())
    for col in ("method", "fits", "peak GiB", "micro-batch x accum", "checkpointing") + (("distributed",) if several
                                                                                       else ()):
        t.add_column(col)
    for m, e in a["estimates"].items():
        t.add_row(m, "yes" if e["fits"] else "no", f"{e['total_gib']:.1f} / {e['capacity_gib']:g}",
                  f"{e['batch']} x {e['grad_accum']}", "on" if e["gradient_checkpointing"] else "off",
                  *((e.get("distributed") or "-",) if several else ()))
    con.print(t)
    con.print("[bold]Hyperparameters[/bold]")
    for k, v in a["hyperparameters"].items():
        val = ",".join(v["value"]) if isinstance(v["value"], list) else v["value"]
        con.print(escape(f"  {k} = {val}: {v['reason']}"))
        if k == "lr":
            con.print("    [dim]measure it on your data: tunewise train CONFIG --find-lr (or tunewise pilot)[/dim]")
    if a["data"]:
        con.print("[bold]Data[/bold]")
        for k in ("size", "quality", "duplicates_advice", "format_advice", "preserve"):
            if k in a["data"]:
                con.print(f"  {a['data'][k]}")
    con.print("[bold]Graduation plan[/bold]")
    for i, step in enumerate(a["graduation"], 1):
        con.print(f"  {i}. {step}")
    for d in a["automatic_decisions"]:
        con.print(f"[dim]  decided automatically: {d}[/dim]")


def advise(
    task: str = typer.Option(None, "--task", "-t", help="classification, structured, style, domain, sql, code, "
                             "math, logic or open-ended."),
    model: str = typer.Option(None, "--model", "-m", help="Preset (llama-2-7b, ...), 'tiny', a folder, a "
                              "config.json or a hub id."),
    gpu_mem: float = typer.Option(None, "--gpu-mem", help="GiB per GPU (omit on a CPU-only machine to plan for "
                                  "its RAM)."),
    gpus: int = typer.Option(None, "--gpus", help="Number of GPUs (default 1)."),
    dataset: str = typer.Option(None, "--dataset", hidden=True, help="Deprecated: --data."),
    data_size: int = typer.Option(None, "--data-size", help="Number of examples, if no file is given."),
    seq_len: int = typer.Option(None, "--seq-len", help="Sequence length; default: --data's longest in tokens."),
    batch: int = typer.Option(None, "--batch", help="Micro-batch size to plan for (default 8)."),
    rank: int = typer.Option(None, "--rank", help="Force a LoRA rank."),
    priority: str = typer.Option(None, "--priority", help="accuracy, time and/or iteration (comma list)."),
    continual: bool = typer.Option(None, "--continual", help="A continual / sequential adaptation pipeline."),
    multi_adapter: bool = typer.Option(None, "--multi-adapter", help="Several adapters swapped at runtime."),
    long_term: bool = typer.Option(None, "--long-term", help="Train once for long-term deployment."),
    quantized_inference: bool = typer.Option(None, "--quantized-inference", help="Quantised inference is planned."),
    device: str = typer.Option(None, "--device", help="cuda (plan GPUs) or cpu (plan this machine)."),
    from_file: str = typer.Option(None, "--from", help="Read the inputs from a YAML file (keys as the flags)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    write_config: str = typer.Option(None, "--write-config", help="Write a `tunewise train` config here."),
    pilot: bool = typer.Option(False, "--pilot", help="The old spelling of `tunewise pilot` (see its --help); "
                               "still runs it, with its flags."),
    base: str = typer.Option(None, "--base", hidden=True, help="--pilot: tunewise pilot's --base."),
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    eval_file: str = typer.Option(None, "--eval", hidden=True, help="--pilot: tunewise pilot's --eval."),
    task_kind: str = typer.Option(None, "--task-kind", hidden=True, help="--pilot: tunewise pilot's --task-kind."),
    budget: float = typer.Option(5.0, "--budget", hidden=True, help="--pilot: tunewise pilot's --budget."),
    pilot_methods: str = typer.Option("lora,full", "--pilot-methods", hidden=True,
                                      help="--pilot: tunewise pilot's --methods."),
    points: str = typer.Option(None, "--points", hidden=True, help="--pilot: tunewise pilot's --points."),
    pilot_epochs: float = typer.Option(2.0, "--pilot-epochs", hidden=True, help="--pilot: tunewise pilot's --epochs."),
    eval_size: int = typer.Option(80, "--eval-size", hidden=True, help="--pilot: tunewise pilot's --eval-size."),
    find_lr_steps: int = typer.Option(30, "--find-lr-steps", hidden=True,
                                      help="--pilot: tunewise pilot's --find-lr-steps."),
    scorer: str = typer.Option(None, "--scorer", hidden=True, help="--pilot: tunewise pilot's --scorer."),
    out: str = typer.Option("runs/pilot", "--out", hidden=True, help="--pilot: tunewise pilot's --out."),
    force: bool = typer.Option(False, "--force", help="Write --out / --write-config though tunewise did not."),
) -> None:
    """Recommend LoRA, QLoRA or full fine-tuning with every reason and its evidence, settings, and a config."""
    data = _data_flag(data, dataset)
    if pilot:
        typer.secho("note: `tunewise advise --pilot` is now `tunewise pilot` (--pilot-methods: --methods, "
                    "--pilot-epochs: --epochs); this spelling still works", fg="yellow", err=True)
        run_pilot_command(base or model, data, eval_file, task, task_kind, budget, pilot_methods, points,
                          pilot_epochs, eval_size, find_lr_steps, scorer, out, force, as_json)
        return
    _refuse_pilot_flags(base, eval_file, task_kind, points)
    flags = dict(task=task, model=model, gpu_mem=gpu_mem, gpus=gpus, dataset=data, data_size=data_size,
                 seq_len=seq_len, batch=batch, rank=rank, continual=continual, multi_adapter=multi_adapter,
                 long_term=long_term, quantized_inference=quantized_inference, device=device)
    _rule_advice(flags, priority, from_file, write_config, as_json, force)


def register(app: typer.Typer) -> None:
    app.command()(advise)


def _data_flag(data: str | None, dataset: str | None) -> str | None:
    """--data, the one flag for the training data; the old --dataset still works, with a note."""
    if dataset is None:
        return data
    if data is not None and data != dataset:
        raise TunewiseError(f"--data '{data}' and --dataset '{dataset}' disagree", "give --data only")
    typer.secho("note: --dataset is now --data (the same flag as tunewise pilot's)", fg="yellow", err=True)
    return dataset


def _refuse_pilot_flags(base, eval_file, task_kind, points) -> None:
    pilot_only = [f for f, v in (("--base", base), ("--eval", eval_file), ("--task-kind", task_kind),
                                 ("--points", points)) if v is not None]
    if pilot_only:
        raise TunewiseError(f"{', '.join(pilot_only)}: only with --pilot",
                            "measure with `tunewise pilot`, or use --model / --data for the rule-based advice")


def _rule_advice(flags: dict, priority: str | None, from_file: str | None, write_config: str | None,
                 as_json: bool, force: bool = False) -> None:
    """The advice from the rule table; exit 1 when no method fits."""
    from tunewise.advise import advise as run_advise

    if write_config:
        from tunewise.ownership import check_file

        check_file(write_config, "train config", force=force, flag="--write-config")  # before the advice
    result = run_advise(_advise_input(flags, priority, from_file, sys.stdin.isatty() and not as_json))
    if write_config:
        _write_config(result, write_config)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        render(result)
        if write_config:
            typer.echo(f"\nwrote {write_config}: tunewise train {write_config}")
    if result.method is None:
        raise typer.Exit(1)


def _advise_input(flags: dict, priority: str | None, from_file: str | None, interactive: bool):
    """The inputs: --from's file, then the flags over it, then what an interactive user is asked for."""
    from tunewise.advise import AdviseInput, AdviseInputError

    values, problems = read_yaml(from_file) if from_file else ({}, [])
    apply_priority(values, values.pop("priority", None), problems)
    values.update({k: v for k, v in flags.items() if v is not None})  # flags override the file
    apply_priority(values, priority, problems)
    if interactive:
        _ask_missing(values, problems)
    if values.get("gpu_mem") is None and "device" not in values:
        import torch

        values["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    values.setdefault("gpus", 1)
    values.setdefault("batch", 8)
    try:
        inp = AdviseInput(**values)
    except ValidationError as e:
        raise AdviseInputError(problems + problems_of(e)) from None
    if problems:
        from tunewise.advise.engine import check

        raise AdviseInputError(problems + check(inp))
    return inp


def _ask_missing(values: dict, problems: list[str]) -> None:
    from tunewise.advise.rules import TASKS

    if not values.get("task"):
        values["task"] = typer.prompt(f"Task ({', '.join(TASKS)})")
    if not values.get("model"):
        values["model"] = typer.prompt("Model (preset, 'tiny', folder or hub id)", default="llama-2-7b")
    if values.get("gpu_mem") is None and values.get("device") != "cpu":
        answer = typer.prompt("GiB per GPU (empty: plan for this machine)", default="", show_default=False)
        if answer.strip():
            try:
                values["gpu_mem"] = float(answer)
            except ValueError:
                problems.append(f"gpu_mem: '{answer}' is not a number of GiB")


def _write_config(result, path: str) -> None:
    """The advised `tunewise train` config, checked as train will load it before it is written."""
    from tunewise.config import dump_config, validate_config
    from tunewise.ownership import file_header

    if result.config is None:
        raise TunewiseError(f"no config written: {result.decision}", "change the model or the hardware")
    cfg = validate_config(result.config, "advise")  # what train will load, checked before writing
    atomic_write_text(Path(path), file_header("train config") + dump_config(cfg))
