"""`tunewise train CONFIG --find-lr`: the learning-rate range test for the configured method, on a freshly loaded
copy of the base in memory. Nothing is trained for keeps; the result is find_lr.json and find_lr.png.

The steps are the training loop's steps (same batches, loss normalisation, clipping and optimizer as
`tunewise train`), only the lr changes every step; the math of the suggestion is in lr_finder.py.

matplotlib is imported only when find_lr.png is drawn.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tunewise.config import RunConfig, load_run_config
from tunewise.defaults import default_lr
from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_save_figure, atomic_write_json
from tunewise.models import check_tokenizer_fits, count_parameters, load_tokenizer
from tunewise.ownership import claim_dir
from tunewise.train.batches import collate, epoch_batches, target_count
from tunewise.train.loop import make_optimizer, summed_loss
from tunewise.train.lr_finder import (
    BETA,
    DIVERGE_FACTOR,
    RangeTestError,
    Suggestion,
    divisor_for,
    ema_smooth,
    exp_schedule,
    suggest,
)
from tunewise.train.methods import get_method, trainable_token_ids
from tunewise.train.run import default_run_dir, load_data
from tunewise.userfiles import check_count
from tunewise.yaml_edit import set_yaml_value

DEFAULT_STEPS = 50
BELOW, ABOVE = 1000.0, 100.0  # the ramp spans size-default / 1000 .. size-default x 100 unless given


@dataclass
class RangeTest:
    method: str
    base: str
    lrs: list[float]  # the lr of each step that ran
    losses: list[float]  # its loss (inf for a non-finite one)
    smoothed: list[float]
    suggestion: Suggestion | None
    size_default_lr: float
    seconds: float
    error: str | None = None  # why there is no suggestion
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"method": self.method, "base": self.base, "suggested_lr": self.suggestion.lr if self.suggestion else
                None, "suggestion": self.suggestion.as_dict() if self.suggestion else None, "error": self.error,
                "size_default_lr": self.size_default_lr, "steps": len(self.losses), "seconds": round(self.seconds, 2),
                "lrs": self.lrs, "losses": [x if math.isfinite(x) else None for x in self.losses],
                "smoothed": [x if math.isfinite(x) else None for x in self.smoothed], "notes": self.notes}


def range_test(cfg: RunConfig, steps: int = DEFAULT_STEPS, lr_min: float | None = None, lr_max: float | None = None,
               train_set=None, divisor: float | None = None, log=None, max_seconds: float | None = None) -> RangeTest:
    """Ramp the lr over `steps` optimizer steps on a fresh copy of cfg.base; stop at divergence (or after
    `max_seconds`, when a caller has a time budget). The divisor defaults to the method's rule (divisor_for)."""
    t0 = time.time()
    method = get_method(cfg.method)
    torch.manual_seed(cfg.train.seed)
    tokenizer = load_tokenizer(cfg.base)
    if train_set is None:
        train_set = load_data(cfg, tokenizer).train
    model = method.load(cfg)
    check_tokenizer_fits(model, tokenizer, cfg.base)
    n_params = count_parameters(model)
    encoder = cfg.task_type == "sequence-classification"
    size_lr = default_lr(cfg.method, n_params, encoder)[0]
    lo, hi = lr_min or size_lr / BELOW, lr_max or min(size_lr * ABOVE, 10.0)
    lrs = exp_schedule(lo, hi, steps)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": lo})})
    torch.manual_seed(cfg.train.seed)
    model = method.prepare(model, cfg, trainable_token_ids(cfg, tokenizer, train_set))
    model.train()
    groups = method.param_groups(model, cfg, lo)
    params = [p for g in groups for p in g["params"]]
    optimizer = make_optimizer(groups, cfg)
    classification = cfg.task_type == "sequence-classification"
    device = next(model.parameters()).device
    batches = _batches(train_set, cfg)
    losses: list[float] = []
    best = math.inf
    cut = False
    loop_start = time.time()
    for i, lr in enumerate(lrs):
        if max_seconds is not None and i >= 3 and _cannot_reach_minimum(t0, loop_start, i, steps, max_seconds):
            cut = True
            break
        for g in optimizer.param_groups:
            g["lr"] = lr * g["base_lr"] / lo  # keeps per-group ratios (LoRA+)
        loss = _accumulate(model, [next(batches) for _ in range(cfg.train.grad_accum)], train_set,
                           tokenizer.pad_token_id, classification, device)
        losses.append(loss if math.isfinite(loss) else math.inf)
        if log:
            log(i + 1, len(lrs), lr, loss)
        smoothed = ema_smooth(losses, BETA)
        if not math.isfinite(loss) or (i > 0 and smoothed[-1] > DIVERGE_FACTOR * best):
            break  # diverged: the rest of the ramp only costs time
        best = min(best, smoothed[-1])
        grads = [p for p in params if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(grads, cfg.train.max_grad_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    ran = lrs[: len(losses)]
    finite = [x for x in losses if math.isfinite(x)]
    smoothed = ema_smooth(finite, BETA) + [math.inf] * (len(losses) - len(finite))
    result = RangeTest(cfg.method, cfg.base, ran, losses, smoothed, None, size_lr, time.time() - t0)
    _suggest_into(result, steps, cut, divisor if divisor is not None else divisor_for(cfg.method))
    return result


# Where a ramp's minimum lies, as a share of its steps: 73-85% in the measured ramps (benchmarks/RESULTS.md); a ramp
# cut before this point almost always ends with the loss still falling, and gives no suggestion.
MINIMUM_SHARE = 0.8


def _cannot_reach_minimum(t0: float, loop_start: float, done: int, steps: int, max_seconds: float) -> bool:
    """Whether the time limit is past, or will be before the ramp reaches MINIMUM_SHARE of its steps at the pace of
    the steps so far: then stopping now gives the caller that time back (the pilot trains with it)."""
    now = time.time()
    per_step = (now - loop_start) / done
    return now - t0 + max(0, math.ceil(MINIMUM_SHARE * steps) - done) * per_step > max_seconds


def _accumulate(model, micro: list, train_set, pad_id: int, classification: bool, device) -> float:
    """Forward and backward over one optimizer step's micro-batches; the mean loss per target."""
    norm = target_count([train_set[j] for rows in micro for j in rows], classification)
    total = 0.0
    for rows in micro:
        batch = {n: t.to(device) for n, t in collate([train_set[j] for j in rows], pad_id, classification).items()}
        loss_sum = summed_loss(model, batch, classification)
        (loss_sum / norm).backward()
        total += float(loss_sum.detach())
    return total / norm


def _suggest_into(result: RangeTest, steps: int, cut: bool, divisor: float) -> None:
    """The suggestion from the ramp run, or why there is none, and what to know about it."""
    ran, losses = result.lrs, result.losses
    try:
        result.suggestion = suggest(ran, losses, divisor=divisor)
    except RangeTestError as e:
        result.error = str(e)
    s = result.suggestion
    if cut and (s is None or (s.diverged_at is None and s.min_loss_index >= len(ran) - 3)):
        result.suggestion = None  # the minimum was not reached: a suggestion from half a curve would be too low
        result.error = (f"the time limit cut the ramp at step {len(ran)} of {steps} (lr {ran[-1]:g}), before the "
                        "loss's minimum (it would not have reached its last steps in time at the pace of the first)")
    elif cut:
        result.notes.append(f"the time limit cut the ramp at step {len(ran)} of {steps}, after the loss's minimum")
    elif s and s.diverged_at is None and s.min_loss_index >= len(ran) - 3:
        result.notes.append(f"the loss was still falling at the end of the ramp (lr {ran[-1]:g}): raise --lr-max "
                            "to find its minimum; the suggestion may be too low")


def _batches(train_set, cfg: RunConfig):
    """Global batches as the training loop draws them (length-grouped, seeded), epoch after epoch."""
    lengths = [len(e.input_ids) for e in train_set]
    epoch = 0
    while True:
        yield from epoch_batches(lengths, cfg.train.batch_size, cfg.train.seed, epoch, cfg.data.group_by_length)
        epoch += 1


def write_result(result: RangeTest, out: Path) -> tuple[Path, Path]:
    """out/find_lr.json and out/find_lr.png (the curve with the suggestion marked)."""
    js = atomic_write_json(out / "find_lr.json", result.as_dict())
    return js, plot(result, out / "find_lr.png")


def plot(result: RangeTest, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    pts = [(lr, x) for lr, x in zip(result.lrs, result.losses, strict=True) if math.isfinite(x)]
    if pts:
        ax.plot(*zip(*pts), lw=0.8, alpha=0.5, label="loss")
    sm = [(lr, x) for lr, x in zip(result.lrs, result.smoothed, strict=True) if math.isfinite(x)]
    if sm:
        ax.plot(*zip(*sm), lw=1.5, label="smoothed")
    s = result.suggestion
    if s:
        ax.axvline(s.min_loss_lr, ls=":", c="grey", label=f"lowest loss {s.min_loss_lr:.2g}")
        ax.axvline(s.lr, ls="--", c="tab:red", label=f"suggested {s.lr:.2g}")
        if s.diverged_lr:
            ax.axvline(s.diverged_lr, ls="-.", c="black", lw=0.8, label=f"diverged {s.diverged_lr:.2g}")
    ax.axvline(result.size_default_lr, ls=":", c="tab:green", label=f"size default {result.size_default_lr:.2g}")
    ax.set_xscale("log")
    if sm:
        top = max(x for _, x in sm[: max(3, len(sm) // 2)])
        ax.set_ylim(top=min(ax.get_ylim()[1], 1.5 * top))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"lr range test: {result.method} on {result.base}", fontsize=10)
    ax.legend(fontsize=7)
    return atomic_save_figure(fig, path)


@dataclass
class RangeTestRun:
    """A range test run for a config file (`tunewise train CONFIG --find-lr`) and where it was written."""

    result: RangeTest
    out: Path
    json: Path
    png: Path


def range_test_for_config(config: Path, overrides: list[str], out: Path | None, force: bool, steps: int,
                          lr_min: float | None, lr_max: float | None, log=None, on_start=None) -> RangeTestRun:
    """The flags checked, the config loaded, the run folder claimed (--out, else the config's output_dir), the
    range test run and written there; `on_start(cfg)` is called before it runs."""
    check_count(steps, "--find-lr-steps", limit=100_000, minimum=5)
    for flag, value in (("--lr-min", lr_min), ("--lr-max", lr_max)):
        if value is not None and not (0 < value < float("inf")):
            raise TunewiseError(f"{flag} must be a positive number (got {value})", f"e.g. {flag} 1e-5")
    if lr_min and lr_max and lr_min >= lr_max:
        raise TunewiseError(f"--lr-min {lr_min:g} is not below --lr-max {lr_max:g}", "swap them")
    cfg = load_run_config(config, overrides)
    flag = "--out" if out is not None else "output_dir"
    out = claim_dir(out or default_run_dir(cfg), "run", force=force, flag=flag)
    if on_start is not None:
        on_start(cfg)
    result = range_test(cfg, steps, lr_min, lr_max, log=log)
    js, png = write_result(result, out)
    return RangeTestRun(result, out, js, png)


def write_lr(config: Path, overrides: list[str], lr: float) -> None:
    """Put the suggested lr into CONFIG's train.lr (the rest of the file kept as written), still a valid config."""
    set_yaml_value(config, "train", "lr", lr)
    load_run_config(config, overrides)


def check_result(result: RangeTest) -> float:
    if result.suggestion is None:
        raise TunewiseError(f"the range test gave no suggestion: {result.error}",
                            "adjust --lr-min / --lr-max or --find-lr-steps, or look at find_lr.png")
    return result.suggestion.lr
