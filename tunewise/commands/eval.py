"""`tunewise eval`: score a base, an adapter or a run directory on a built-in task or the user's own test file,
and with --preserve, measure what fine-tuning changed on retention probes (base vs tuned).

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

from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_json, atomic_write_text, to_json
from tunewise.userfiles import check_count

SCORER_HELP = ("exact, normalized, contains, json, classify, sql, number, mr, or your own MODULE:FUNCTION (a module "
               "or a .py file; fn(prediction, reference) returns a number, a bool or a dict of numbers). Default: "
               "the task's, else exact.")


STEP_HELP = ("With a run directory: the adapter of its checkpoint N (RUN/checkpoints/step-N, kept by "
             "train.save_every / keep_last) instead of its final one.")


def _split_list(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def eval_cmd(
    target: str = typer.Argument(..., help="A run directory, a PEFT adapter folder, a model folder, or a base "
                                           "('tiny', 'minilm', a hub id)."),
    data: str = typer.Option(None, "--data", "-d", help="Task directory (tunewise tasks make), or test data "
                                                        "in any training format: a file, a save_to_disk folder "
                                                        "or a dataset id."),
    task: str = typer.Option(None, "--task", "-t", help="Built-in task: generates its test split (with "
                                                        "--data: score that file the way this task is scored)."),
    split: str = typer.Option("test", "--split", help="Split of a task directory or a dataset."),
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Evaluate the first N examples."),
    seed: int = typer.Option(0, "--seed", help="Seed for --task's generated test split."),
    scorer: str = typer.Option(None, "--scorer", help=SCORER_HELP),
    db: str = typer.Option(None, "--db", help="SQLite file for the sql scorer (read-only)."),
    schema: str = typer.Option(None, "--schema", help="JSON schema file for the json scorer."),
    labels: str = typer.Option(None, "--labels", help="Comma-separated labels (classify / --mode loglik)."),
    stop: list[str] = typer.Option(None, "--stop", help="Stop string (repeatable; default: the task's, "
                                                        "else newline)."),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", min=1, help="Generation budget."),
    mode: str = typer.Option("generate", "--mode", help="generate (greedy) or loglik (pick the most "
                                                        "likely of the choices / labels)."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Rows decoded together (the engine's "
                                   "GENERATE_ROWS); lower it for a large model on a small GPU, where each row's "
                                   "KV cache is large."),
    preserve: str = typer.Option(None, "--preserve", help="Retention probes, e.g. arithmetic,lm or a JSONL "
                                                          "path: base vs tuned."),
    probe_limit: int = typer.Option(64, "--probe-limit", min=1, help="Examples per probe."),
    base: str = typer.Option(None, "--base", help="The base model (when the run does not record it)."),
    step: int = typer.Option(None, "--step", min=0, help=STEP_HELP),
    out: Path = typer.Option(None, "--out", "-o", help="Write results.json and predictions.jsonl here "
                                                       "(default for a run directory: RUN/eval/NAME)."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: auto)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    force: bool = typer.Option(False, "--force", help="Write into --out even if tunewise did not write it."),
) -> None:
    """Evaluate a model on a task (metrics + per-example predictions) and, with --preserve, on retention probes."""
    from tunewise.evaluate.runner import apply_overrides, load_target
    from tunewise.merge import refuse_other_base
    from tunewise.tasks.probes import parse_probe_list

    _check_flags(mode, out, {"--limit": limit, "--probe-limit": probe_limit, "--max-new-tokens": max_new_tokens,
                             "--batch-size": batch_size}, force)
    probes = parse_probe_list(preserve)
    run_dir, target = _run_of(target, step)
    spec = _test_data(target, base, data, task, run_dir, split, limit, seed, probes)
    if spec is not None:
        spec = apply_overrides(spec, scorer, db, schema, stop or None, max_new_tokens, _split_list(labels))
        spec.scorer()  # fail early on a missing database, schema or scorer function, before loading the model
    refuse_other_base(target, base)  # as merge refuses the pair, before the model loads
    loaded = load_target(target, base, spec.labels if spec else None, device)
    _note_context(loaded, spec, mode)
    result, retention = _scores(loaded, spec, mode, batch_size, probes, probe_limit, base)
    out_dir = out or (_default_out(run_dir, spec, step) if run_dir is not None and spec else None)
    written = _write(out_dir, result, retention) if out_dir else []
    if as_json:
        typer.echo(json.dumps(_payload(target, result, retention, written), indent=2, default=str))
        return
    _print(result, retention, written)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)


def _scores(loaded, spec, mode: str, batch_size: int, probes, probe_limit: int, base: str | None):
    """(the task's result or None, the probes' retention or None); the result carries the retention."""
    from tunewise.evaluate.runner import preserve as run_preserve

    result = _evaluate(loaded, spec, mode, batch_size) if spec else None
    retention = run_preserve(loaded, probes, probe_limit, base, batch_size) if probes else None
    if result is not None:
        result.retention = retention
    return result, retention


def _check_flags(mode: str, out: Path | None, counts: dict[str, int | None], force: bool = False) -> None:
    """Every flag a user can get wrong, checked before a model is loaded."""
    from tunewise.ownership import check_dir

    if mode not in ("generate", "loglik"):
        raise TunewiseError(f"--mode must be generate or loglik (got '{mode}')", "use --mode generate")
    for flag, n in counts.items():
        check_count(n, flag, minimum=1)  # a --task split of 10^20 examples would be generated first
    if out is not None:
        check_dir(out, "eval", force=force)  # before the model is loaded and scored


def _test_data(target: str, base: str | None, data: str | None, task: str | None, run_dir: Path | None,
               split: str, limit: int | None, seed: int, probes: list[str]):
    """What to score the target on: --data, --task or the run's own test split; None for probes alone."""
    from tunewise.evaluate.runner import resolve_data, task_format_of

    if not (data or task or not probes or run_dir is not None):
        return None
    try:
        fmt = task_format_of(target, base) if task and not data else "prompt_completion"
        return resolve_data(data, task, run_dir, split, limit, seed, task_format=fmt)
    except TunewiseError:
        if data or task or not probes:
            raise
        return None  # --preserve alone on a run whose training data is not a task directory: probes only


def _payload(target: str, result, retention, written: list[Path]) -> dict:
    payload = result.summary() if result else {"target": target}
    if retention is not None:
        payload["retention"] = retention
    payload["written"] = [str(p) for p in written]
    return payload


def _evaluate(loaded, spec, mode: str, batch_size: int):
    """The scores, with what makes them mean less than they seem said on stderr (e.g. answers cut by --stop)."""
    from tunewise.evaluate.runner import evaluate

    result = evaluate(loaded, spec, mode, batch_size)
    for note in result.warnings:
        typer.secho(f"WARNING: {note}", fg="yellow", err=True)
    return result


def _note_context(loaded, spec, mode: str) -> None:
    from tunewise.evaluate.runner import context_overflow

    note = context_overflow(loaded, spec, mode) if spec is not None else None
    if note:
        typer.secho(f"WARNING: {note}", fg="yellow", err=True)


def _run_of(target: str, step: int | None) -> tuple[Path | None, str]:
    """(the run directory TARGET is, or None; what to load): with --step, the run's checkpoint N."""
    from tunewise.rundir import RunDir
    from tunewise.targets import checkpoint_of

    run_dir = Path(target) if RunDir.started(target) else None
    if step is not None:
        return run_dir, str(checkpoint_of(Path(target), step))
    if run_dir is not None:
        _note_unfinished(run_dir)
    return run_dir, target


def _default_out(run_dir: Path, spec, step: int | None) -> Path:
    """RUN/eval/NAME, or RUN/eval/NAME-step-N for a checkpoint (so it never replaces the final adapter's)."""
    from tunewise.rundir import RunDir

    return RunDir(run_dir).eval_files(_eval_name(spec) + (f"-step-{step}" if step is not None else "")).folder


def _note_unfinished(run_dir: Path) -> None:
    """Scoring a run that did not complete is allowed (a checkpointed adapter may be what you want), but say so."""
    from tunewise.rundir import RunDir

    status = RunDir(run_dir).status
    if status != "completed":
        typer.secho(f"note: run {run_dir} did not complete (status: {status or 'no summary.json'}); scoring what "
                    "it saved", fg="yellow", err=True)


def _eval_name(spec) -> str:
    return spec.task or Path(spec.source).stem


def _write(out_dir: Path, result, retention) -> list[Path]:
    from tunewise.ownership import mark_dir
    from tunewise.rundir import EvalFiles

    written = []
    files = EvalFiles(out_dir)  # the eval layout compare writes too
    mark_dir(out_dir, "eval")
    if result is not None:
        written.append(atomic_write_json(files.results, result.summary()))
        lines = "".join(to_json(r, ensure_ascii=False) + "\n" for r in result.predictions)
        written.append(atomic_write_text(files.predictions, lines))
    if retention is not None:
        written.append(atomic_write_json(files.retention, retention))
    return written


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)


def _short(text, n: int = 70) -> str:
    s = repr(text)
    return s if len(s) <= n else s[: n - 3] + "..."


def _print(result, retention, written) -> None:
    con = Console()
    if result is not None:
        title = (f"{result.target} on {result.source} ({result.n} examples, scorer {result.scorer}, "
                 f"{result.mode}, {result.wall_time_s:.1f}s)")
        con.print(escape(title))
        table = Table()
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in result.metrics.items():
            table.add_row(f"[bold]{k}[/bold]" if k == result.primary else k, _fmt(v))
        if result.invalid_records:
            table.add_row("invalid test records", str(result.invalid_records))
        con.print(table)
        wrong = [r for r in result.predictions if not r["correct"]][:3]
        for r in wrong:
            con.print(f"  wrong #{r['index']}: {escape(str(r['reason']))}; got {escape(_short(r['prediction']))}")
    if retention is not None:
        t = Table(title=escape(f"retention: {retention['base_name']} -> tuned"))
        for col in ("probe", "metric", "base", "tuned", "change", "relative", "worse"):
            t.add_column(col, justify="right" if col not in ("probe", "metric") else "left")
        for name, c in retention["change"].items():
            direction = "higher is better" if c["higher_is_better"] else "lower is better"
            t.add_row(escape(name), f"{c['metric']} ({direction})", _fmt(c["before"]), _fmt(c["after"]),
                      f"{c['abs_change']:+.4f}", "n/a" if c["rel_change"] is None else f"{c['rel_change']:+.1%}", "yes" if c["dropped"] else "no")
        con.print(t)
    for p in written:
        con.print(f"wrote {escape(str(p))}")
