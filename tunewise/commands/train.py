"""`tunewise train`: one command for LoRA, QLoRA and full fine-tuning.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tunewise.errors import TunewiseError
from tunewise.inputs import help_text


def train(
    config: Path = typer.Argument(None, help="Run config (YAML). Optional with --resume."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set lora.r=32 (repeatable)."),
    out: Path = typer.Option(None, "--out", help="Run directory (default: output_dir or runs/<method>-<time>)."),
    resume: Path = typer.Option(None, "--resume", help="Continue this run directory from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or guard messages."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json at the end."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out folder tunewise did not "
                               "create; with --resume, continue though the data or base changed."),
    find_lr: bool = typer.Option(False, "--find-lr", help="Learning-rate range test instead of training: the lr "
                                 "grows exponentially over --find-lr-steps steps on a copy of the base; writes "
                                 "OUT/find_lr.json and find_lr.png and prints the suggestion: the lr of the "
                                 "lowest smoothed loss (EMA, bias-corrected) before divergence (loss > 4x the "
                                 "best), divided by 10 for full fine-tuning and by 2 for LoRA / QLoRA; none when "
                                 "a rank test cannot tell the losses before that minimum from the ramp's start (batch noise)."),
    write: bool = typer.Option(False, "--write", help="With --find-lr: put the suggested lr into CONFIG "
                               "(train.lr; the rest of the file is kept as written)."),
    find_lr_steps: int = typer.Option(50, "--find-lr-steps", help="With --find-lr: optimizer steps of the ramp."),
    lr_min: float = typer.Option(None, "--lr-min", help="With --find-lr: first lr (default size default / 1000)."),
    lr_max: float = typer.Option(None, "--lr-max", help="With --find-lr: last lr (default size default x 100)."),
    help_config: bool = typer.Option(False, "--help-config", help="Print every config key with its type, "
                                     "default and description, and exit."),
) -> None:
    """Train per a YAML config: LoRA (default), QLoRA or full fine-tuning, with the framework's guardrails.

    Writes RUN_DIR/{config.yaml, metrics.jsonl, summary.json, loss.png, adapter/ or model/, checkpoints/},
    best/ with train.keep_best, and tensorboard/, wandb/, mlruns/ with train.report_to.
    With --find-lr: no training, a learning-rate range test; writes only RUN_DIR/{find_lr.json, find_lr.png}
    (suggestion: lowest smoothed loss before divergence / 10 for full, / 2 for LoRA and QLoRA, none inside the
    batch noise; --write puts it into CONFIG).
    Multi-process: torchrun --nproc_per_node=N -m tunewise train run.yaml (DDP; gloo on CPU, NCCL on GPU).
    Exit codes: 0 done, 1 a preserved skill dropped too far (preserve.action: fail), 2 bad input,
    3 the loss or gradient became NaN/Inf (nothing non-finite was written), 4 a checkpoint could not be written
    (the earlier ones are intact), 70 an internal error (a bug; traceback printed), 130 interrupted (checkpoint saved).
    """
    if help_config:
        from tunewise.config import RunConfig

        typer.echo(help_text(RunConfig))
        return
    if find_lr or write:
        if resume is not None:
            raise TunewiseError("--find-lr and --resume both given", "the range test starts from the base; "
                                "drop --resume")
        _find_lr(config, set_, out, force, write, find_lr, find_lr_steps, lr_min, lr_max, quiet, as_json)
        return
    if resume is not None:
        if out is not None:
            raise TunewiseError("--out and --resume both given", f"--resume continues in {resume}; drop --out")
        result = _resume(config, set_, resume, quiet, force)
        if result is None:
            return
    else:
        result = _start(config, set_, out, force, quiet)
    _finish(result, as_json)


def register(app: typer.Typer) -> None:
    app.command()(train)


def _find_lr(config: Path | None, set_: list[str], out: Path | None, force: bool, write: bool, find_lr: bool,
             steps: int, lr_min: float | None, lr_max: float | None, quiet: bool, as_json: bool) -> None:
    """--find-lr [--write]: the range test (tunewise/train/find_lr.py), its suggestion printed."""
    from tunewise.train.find_lr import check_result, range_test_for_config, write_lr

    if not find_lr:
        raise TunewiseError("--write needs --find-lr", "tunewise train run.yaml --find-lr --write")
    if config is None:
        raise TunewiseError("--find-lr needs a config", "tunewise train run.yaml --find-lr")
    talk = not quiet and not as_json

    def log(step, total, lr, loss):
        if talk and (step == 1 or step % 10 == 0):
            typer.echo(f"  step {step}/{total}: lr {lr:.3g}, loss {loss:.4g}", err=True)

    def on_start(cfg):
        if talk:
            typer.echo(f"lr range test: {cfg.method} on {cfg.base}, up to {steps} steps", err=True)

    run = range_test_for_config(config, set_, out, force, steps, lr_min, lr_max, log, on_start)
    result = run.result
    if as_json:
        typer.echo(json.dumps(result.as_dict() | {"json": str(run.json), "png": str(run.png)}, indent=2))
    lr = float(f"{check_result(result):.3g}")
    if not as_json:
        s = result.suggestion
        div = f"diverged at {s.diverged_lr:.3g}" if s.diverged_lr else "did not diverge"
        typer.echo(f"suggested lr: {lr:g} (lowest smoothed loss at {s.min_loss_lr:.3g} / {s.divisor:g}; steepest "
                   f"descent at {s.steepest_lr:.3g}; {div}; size default {result.size_default_lr:g})")
        for note in result.notes:
            typer.echo(f"note: {note}")
        typer.echo(f"curve: {run.png}\nresult: {run.json}")
    if write:
        write_lr(config, set_, lr)
        if not as_json:
            typer.echo(f"wrote train.lr: {lr:g} into {config}")


def _resume(config: Path | None, set_: list[str], resume: Path, quiet: bool, force: bool = False):
    """Continue a run from its last checkpoint; None (and a line saying so) when it already finished."""
    from tunewise.config import load_run_config
    from tunewise.train import train as run_train
    from tunewise.train.resume import check_resumable, finished_summary

    check_resumable(resume)
    done = finished_summary(resume)
    if done is not None:  # nothing to continue: say so and leave every file as it is
        typer.echo(f"run {resume} is complete ({done.get('steps')} steps, final train loss "
                   f"{done.get('final_train_loss')}); nothing to resume")
        return None
    from tunewise.rundir import RunDir

    cfg = load_run_config(config or RunDir(resume).config_path, set_, run_dir_config=config is None)
    check_resumable(resume, cfg)
    return run_train(cfg, resume, resume=True, quiet=quiet, force=force)


def _start(config: Path | None, set_: list[str], out: Path | None, force: bool, quiet: bool):
    from tunewise.config import load_run_config
    from tunewise.ownership import claim_dir
    from tunewise.train import train as run_train
    from tunewise.train.distributed import launched_rank
    from tunewise.train.run import default_run_dir

    if config is None:
        raise TunewiseError("no config given", "tunewise train run.yaml (or --resume RUN_DIR)")
    cfg = load_run_config(config, set_)
    flag = "--out" if out is not None else "output_dir"
    out = out or default_run_dir(cfg)
    if launched_rank() == 0:  # under torchrun one rank claims; the others wait for it in train()
        claim_dir(out, "run", force=force, flag=flag)
    return run_train(cfg, out, quiet=quiet)


def _finish(result, as_json: bool) -> None:
    """Print the summary; the exit code says how the run ended."""
    if result.summary is None:  # a non-zero DDP rank
        return
    s = result.summary.as_dict()
    if as_json:
        typer.echo(json.dumps(s, indent=2))
    else:
        _print_summary(s, result.run_dir)
    if s.get("status") == "interrupted":
        raise typer.Exit(130)  # stopped by Ctrl-C / SIGTERM: not "done", though the checkpoint is safe
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _print_summary(s: dict, run_dir: Path) -> None:
    typer.echo(f"\n{s['status']}: {s['method']} on {s['base']}, {s['steps']} steps in {s['train_time_s']}s "
               f"({s['tokens_per_s']:.0f} tokens/s), peak RSS {s['peak_rss_mb']:.0f} MB")
    typer.echo(f"trainable {s['trainable_params']:,} of {s['total_params']:,} parameters; final train loss "
               f"{s['final_train_loss']}, eval loss {s['final_eval_loss']}")
    if s.get("best_step") is not None:
        typer.echo(f"best eval loss {s['best_eval_loss']:.6g} at step {s['best_step']}: saved as {s['output']}")
    for e in s["guard_events"]:
        typer.echo(f"  [guard:{e['guard']}] step {e['step']}: {e['message']}")
    from tunewise.report.text import retention_words

    words = retention_words(s.get("retention"))
    for name, c in (s.get("retention") or {}).items():
        typer.echo(f"  retention {name}: {c['before']:.4g} -> {c['after']:.4g} ({words.get(name, 'no relative change')})")
    if s["status"] == "interrupted":
        typer.echo(f"checkpoint saved; continue with: tunewise train --resume {run_dir}")
    typer.echo(f"run directory: {run_dir}")
