"""`tunewise compare`: LoRA vs QLoRA vs full fine-tuning on one task, with the framework's verdict.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json
import math

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunewise import progress
from tunewise.defaults import METHODS
from tunewise.errors import TunewiseError
from tunewise.userfiles import check_count


def _parse_lr(text: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (text or "").split(",")):
        method, _, value = part.partition("=")
        try:
            out[method.strip()] = float(value)
        except ValueError:
            raise TunewiseError(f"--lr '{part}': expected method=value, e.g. lora=1e-3,full=3e-4",
                                "give one method=value per method") from None
    return out


def check_sizes(epochs: float, max_steps: int | None, rank: int, train_size: int, eval_size: int,
                seeds: int = 1) -> None:
    """Each size flag under its own name, before anything is trained."""
    if not math.isfinite(epochs) or epochs <= 0 or epochs > 1000:
        raise TunewiseError(f"--epochs must be a number in (0, 1000] (got {epochs})", "e.g. --epochs 2")
    check_count(max_steps, "--max-steps", minimum=1)
    check_count(rank, "--rank", limit=65536, minimum=1)
    check_count(train_size, "--train-size", minimum=1)
    check_count(eval_size, "--eval-size", minimum=1)
    check_count(seeds, "--seeds", limit=20, minimum=1)


def print_table(result: dict) -> None:
    from tunewise.report.text import number_text, retention_words

    metric = next(iter(result["rows"].values()))["metric"]
    cols = [("score", metric or "score"), ("trainable_params", "trainable"), ("output_size_mb", "out MB"),
            ("train_time_s", "time s"), ("tokens_per_s", "tok/s"), ("peak_rss_mb", "peak MB"),
            ("final_train_loss", "train loss"), ("final_eval_loss", "eval loss"), ("intruders", "intruders")]
    table = Table(title=f"compare: {result['spec'].get('task') or result['spec'].get('data')} on "
                        f"{result['spec']['base']}")
    table.add_column("method")
    for _, label in cols:
        table.add_column(label, justify="right")
    table.add_column("retention")
    for m, r in result["rows"].items():
        ret = ", ".join(f"{p} {w}" for p, w in retention_words(r.get("retention")).items())
        cells = [number_text(r.get(k)) for k, _ in cols]
        if r.get("score_sd") is not None:  # several seeds: their mean and spread
            cells[0] = f"{number_text(r['score'])} ± {number_text(r['score_sd'])}"
        table.add_row(m + (f" ({r['seeds']} seeds)" if r.get("seeds", 1) > 1 else ""), *cells, ret)
    console = Console(width=max(Console().width, 150))  # the table is wide; don't squash it in pipes
    console.print(table)
    if result.get("base"):
        console.print(f"untuned base: {result['base']['metric']} {number_text(result['base']['score'])}")
    for m, note in (result.get("lr_notes") or {}).items():  # which evidence each default lr rests on
        console.print(escape(f"lr {m}: {note}"), style="dim")
    console.print(f"[bold]verdict:[/bold] {result['verdict']['text']}")


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        base: str = typer.Option("tiny", help="Base model: 'tiny', a folder or a hub id."),
        task: str = typer.Option(None, help="Built-in task: structured, classify, sql, math."),
        data: str = typer.Option(None, help="Your data: a folder with train/validation/test JSONL (+ meta.json)."),
        task_kind: str = typer.Option(None, help="representation | sql | reasoning | other (default: from task)."),
        methods: str = typer.Option(",".join(METHODS), help=f"Comma-separated subset of {','.join(METHODS)}."),
        out: str = typer.Option("runs/compare", help="Output folder; repeated runs reuse finished methods."),
        rank: int = typer.Option(16, help="LoRA rank (the seed: 16 or 32)."),
        epochs: float = typer.Option(2.0, help="Same budget for every method."),
        max_steps: int = typer.Option(None, help="Budget in optimizer steps instead of epochs."),
        lr: str = typer.Option(None, help="Per-method lr, e.g. lora=1e-3,full=3e-4 (default: by model size)."),
        train_size: int = typer.Option(400, help="Training examples of a built-in task."),
        eval_size: int = typer.Option(150, help="Test examples scored; the gap's band narrows as 1/sqrt of it "
                                      "(+-5 points takes a few hundred)."),
        seeds: int = typer.Option(1, help="Train and score each method this many times (seed, seed+1, ...): the "
                                  "band then includes the seed-to-seed spread, and the table shows it."),
        max_seq_len: int = typer.Option(None, help="Longest example in tokens (default: the data's longest, up to "
                                        "the model's context; nothing is cut)."),
        scorer: str = typer.Option(None, help="Score with a built-in scorer or your own MODULE:FUNCTION "
                                   "(prediction, reference) -> a score or a dict (default: the task's)."),
        allow_truncation: bool = typer.Option(False, "--allow-truncation", help="Train even when more than 5% of "
                                              "the examples would be cut to --max-seq-len."),
        probes: str = typer.Option(None, help="Retention probes ('' for none); default arithmetic,lm on the tiny "
                                   "base, knowledge,follows,kl on any other model."),
        seed: int = typer.Option(0),
        no_analyze: bool = typer.Option(False, "--no-analyze", help="Skip the intruder analysis."),
        quiet: bool = typer.Option(False, "--quiet", "-q"),
        as_json: bool = typer.Option(False, "--json", help="Print compare.json."),
        force: bool = typer.Option(False, "--force", help="Write into --out even when it holds other files or a "
                                   "compare of another task."),
    ) -> None:
        """Train LoRA, QLoRA and full fine-tuning with the same data, budget and evaluation; put them side by
        side (score, retention, parameters, size, time, memory, losses, guards, intruders) and give the verdict.
        Writes OUT/compare.json and OUT/report.html."""
        from tunewise.compare import CompareSpec

        check_sizes(epochs, max_steps, rank, train_size, eval_size, seeds)
        if task is None and data is None:
            task = "structured"
            if not as_json:
                typer.echo("no --task or --data given: comparing on the built-in task 'structured'")
        spec = CompareSpec(base=base, task=task, data=data, task_kind=task_kind,
                           methods=[m.strip() for m in methods.split(",") if m.strip()], out=out, rank=rank,
                           epochs=epochs, max_steps=max_steps, lr=_parse_lr(lr), train_size=train_size,
                           eval_size=eval_size, seed=seed, seeds=seeds, max_seq_len=max_seq_len,
                           allow_truncation=allow_truncation, scorer=scorer,
                           probes=None if probes is None else [p for p in probes.split(",") if p],
                           analyze=not no_analyze)
        _run(spec, quiet, as_json, force)


def _run(spec, quiet: bool, as_json: bool, force: bool) -> None:
    """Check the spec, claim the output folder, run the comparison and print it (table or JSON) and the report."""
    from tunewise.compare import check_spec, run_compare
    from tunewise.ownership import claim_dir
    from tunewise.report import write_report

    check_spec(spec)
    claim_dir(spec.out, "compare", spec.task or str(spec.data), force=force)
    with progress.quiet(quiet):
        result = run_compare(spec, quiet=quiet, log=(lambda *_: None) if quiet or as_json else typer.echo)
    report = write_report(spec.out)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    print_table(result)
    typer.echo(f"report: {report}")
