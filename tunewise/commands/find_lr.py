"""`tunewise train CONFIG --find-lr [--write]`: the command-line side of the lr range test."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def run_find_lr(config: Path | None, set_: list[str], out: Path | None, force: bool, write: bool, find_lr: bool,
                steps: int, lr_min: float | None, lr_max: float | None, quiet: bool, as_json: bool) -> None:
    from tunewise.config import load_run_config
    from tunewise.errors import TunewiseError
    from tunewise.ownership import claim_dir
    from tunewise.train.find_lr import check_result, range_test, write_result
    from tunewise.train.run import default_run_dir
    from tunewise.userfiles import check_count

    if not find_lr:
        raise TunewiseError("--write needs --find-lr", "tunewise train run.yaml --find-lr --write")
    if config is None:
        raise TunewiseError("--find-lr needs a config", "tunewise train run.yaml --find-lr")
    check_count(steps, "--find-lr-steps", limit=100_000, minimum=5)
    for flag, value in (("--lr-min", lr_min), ("--lr-max", lr_max)):
        if value is not None and not (0 < value < float("inf")):
            raise TunewiseError(f"{flag} must be a positive number (got {value})", f"e.g. {flag} 1e-5")
    if lr_min and lr_max and lr_min >= lr_max:
        raise TunewiseError(f"--lr-min {lr_min:g} is not below --lr-max {lr_max:g}", "swap them")
    cfg = load_run_config(config, set_)
    flag = "--out" if out is not None else "output_dir"
    out = claim_dir(out or default_run_dir(cfg), "run", force=force, flag=flag)

    def log(step, total, lr, loss):
        if not quiet and not as_json and (step == 1 or step % 10 == 0):
            typer.echo(f"  step {step}/{total}: lr {lr:.3g}, loss {loss:.4g}", err=True)

    if not quiet and not as_json:
        typer.echo(f"lr range test: {cfg.method} on {cfg.base}, up to {steps} steps", err=True)
    result = range_test(cfg, steps, lr_min, lr_max, log=log)
    js, png = write_result(result, out)
    if as_json:
        typer.echo(json.dumps(result.as_dict() | {"json": str(js), "png": str(png)}, indent=2))
    lr = check_result(result)
    lr = float(f"{lr:.3g}")
    if not as_json:
        s = result.suggestion
        div = f"diverged at {s.diverged_lr:.3g}" if s.diverged_lr else "did not diverge"
        typer.echo(f"suggested lr: {lr:g} (lowest smoothed loss at {s.min_loss_lr:.3g} / {s.divisor:g}; steepest "
                   f"descent at {s.steepest_lr:.3g}; {div}; size default {result.size_default_lr:g})")
        for note in result.notes:
            typer.echo(f"note: {note}")
        typer.echo(f"curve: {png}\nresult: {js}")
    if write:
        from tunewise.yaml_edit import set_yaml_value

        set_yaml_value(config, "train", "lr", lr)
        load_run_config(config, set_)  # still a valid config
        if not as_json:
            typer.echo(f"wrote train.lr: {lr:g} into {config}")
