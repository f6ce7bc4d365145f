"""The learning-rate range test's math (Smith 2015/2017, "Cyclical Learning Rates"; the fastai lr finder): pure
numbers in, numbers out, apart from the training that produces the losses (tunewise/train/find_lr.py).

The rule tunewise uses (documented in the README and `tunewise train --help`):
  1. the lr grows exponentially from lr_min to lr_max, one optimizer step per value;
  2. the loss is smoothed with an exponential moving average with bias correction (beta, like Adam's moments);
  3. the test stops at divergence: a smoothed loss above DIVERGE_FACTOR x the best so far, or a non-finite loss;
  4. the suggestion is the lr of the lowest smoothed loss before divergence divided by a divisor per method
     (`divisor_for`): 10 for full fine-tuning, the fastai finder's "minimum / 10" rule (Smith's observation that
     the best lr sits about a decade below the point where the loss stops falling); 2 for LoRA and QLoRA, whose best
     lr sits much closer to its ramp's minimum (LoRA's B starts at zero, so a short low-lr stretch moves the loss
     little; "LoRA Without Regret" finds LoRA's best lr ~10x full fine-tuning's). Measured against 5-point grids
     (benchmarks/RESULTS.md): minimum / 10 landed 2-6x below LoRA's best and failed the 10% check on both bases;
     minimum / 2 passed on 5 of the 6 LoRA / QLoRA curves measured (the miss: a grid best in a narrow dip).
     The steepest-descent point is reported too, but it is not the rule: over a short ramp of noisy batches its
     position moves with single batches (on the tiny base it sat 3-5x below the best lr of a sweep in one pair of
     ramps, 100-400x below in another), while the minimum of the smoothed curve is stable.
  5. no suggestion when the raw losses behind that minimum (the EMA's last WINDOW steps) are not significantly
     lower than the losses of the ramp's first third, where the lr is still too small to train: a one-sided
     Mann-Whitney rank test, its p-value multiplied by the number of disjoint windows the minimum could have been
     picked from, must be below ALPHA. Then the curve is noise and callers fall back to the size default. Ranks,
     not a mean and a standard deviation, because batch losses on small batches are heavy-tailed and bimodal
     (the tiny base's math batches sit at 0.2 or at 4-8): a smoothed curve's dip can be one lucky batch, and one
     unlucky batch can make a real fall look like noise.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

DIVERGE_FACTOR = 4.0  # smoothed loss above 4x the best so far = diverged (fastai's rule)
BETA = 0.8  # EMA weight; a short ramp (tens of steps) needs a shorter memory than fastai's 0.98 over 100 steps
DIVISOR = 10.0  # full fine-tuning: suggestion = lowest-loss lr / DIVISOR (see the module docstring)
ADAPTER_DIVISOR = 2.0  # LoRA and QLoRA: lowest-loss lr / 2 (see the module docstring)
SKIP_START = 2  # the first points' bias-corrected average rests on one or two losses: too noisy for a slope
# The drop test (rule 5): every ramp that trained in benchmarks/RESULTS.md (structured and classify on the tiny base
# and smollm2; lora, qlora, full) gave p < 1e-3, the noise-only ones (tiny base sql and math) p = 1. 0.05 lets a
# 12-step ramp (4 start losses) pass when its fall is clean (floor p ~0.013).
WINDOW = 5  # raw losses behind the smoothed minimum: about the EMA's memory, 1 / (1 - BETA)
ALPHA = 0.05


def divisor_for(method: str) -> float:
    """The divisor of the suggestion rule for a training method (lora, qlora, full)."""
    return ADAPTER_DIVISOR if method in ("lora", "qlora") else DIVISOR


class RangeTestError(ValueError):
    """The curve does not support a suggestion (too short, or the loss never fell)."""


def exp_schedule(lr_min: float, lr_max: float, steps: int) -> list[float]:
    """`steps` learning rates growing geometrically from lr_min to lr_max (both included)."""
    if not (0 < lr_min < lr_max) or not all(map(math.isfinite, (lr_min, lr_max))):
        raise ValueError(f"need 0 < lr_min < lr_max (got {lr_min:g}, {lr_max:g})")
    if steps < 2:
        raise ValueError(f"need at least 2 steps (got {steps})")
    ratio = (lr_max / lr_min) ** (1 / (steps - 1))
    return [lr_min * ratio**i for i in range(steps)]


def ema_smooth(values: list[float], beta: float = BETA) -> list[float]:
    """Exponential moving average with bias correction: avg_i / (1 - beta^(i+1)), so early values are not pulled
    towards 0."""
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def divergence_index(raw: list[float], smoothed: list[float], factor: float = DIVERGE_FACTOR) -> int | None:
    """The first step whose loss is non-finite or whose smoothed loss exceeds `factor` x the best smoothed loss
    before it; None when the curve never diverges."""
    best = math.inf
    for i, (r, s) in enumerate(zip(raw, smoothed, strict=True)):
        if not math.isfinite(r) or not math.isfinite(s):
            return i
        if i > 0 and s > factor * best:
            return i
        best = min(best, s)
    return None


def rank_tail(n_head: int, n_window: int, u: float) -> float:
    """P(U >= u) for the Mann-Whitney count U = #(window value < head value) pairs when the two samples come from
    one distribution (exact, by counting the arrangements of the pooled ranks; ties are counted half in u)."""

    # rows[j][k]: arrangements of i head and j window values with U = k, built up one head value at a time (the
    # largest of the pooled values is either the new head one, above all j window values, or a window one)
    rows = [[1] for _ in range(n_window + 1)]  # i = 0: U = 0 whatever j
    for i in range(1, n_head + 1):
        new = [[1]]  # j = 0
        for j in range(1, n_window + 1):
            out = [0] * (i * j + 1)
            for k, c in enumerate(rows[j]):  # largest is the i-th head value: j more pairs
                out[k + j] += c
            for k, c in enumerate(new[j - 1]):  # largest is a window value: no pair
                out[k] += c
            new.append(out)
        rows = new
    dist = rows[n_window]
    return sum(dist[math.floor(u):]) / sum(dist)


def drop_p_value(losses: list[float], low: int, end: int) -> tuple[float, float, float]:
    """(p, start level, window level): whether the raw losses behind the smoothed minimum at `low` sit below the
    ramp's first third (rule 5 of the module docstring). p is 1 when the minimum lies inside the first third."""
    head = losses[: max(4, end // 3)]
    window = losses[max(len(head), low - WINDOW + 1): low + 1]
    level = statistics.median(head)
    if not window:
        return 1.0, level, statistics.median(losses[max(0, low - WINDOW + 1): low + 1])
    u = sum(1.0 if w < h else 0.5 if w == h else 0.0 for w in window for h in head)
    windows = max(1.0, (end - len(head)) / WINDOW)  # where else the minimum could have landed
    return min(1.0, rank_tail(len(head), len(window), u) * windows), level, statistics.median(window)


@dataclass
class Suggestion:
    lr: float  # the suggestion: min_loss_lr / divisor
    steepest_lr: float
    steepest_index: int
    min_loss_lr: float
    min_loss_index: int
    diverged_at: int | None  # step index of divergence, None when the ramp ended first
    diverged_lr: float | None
    slope: float  # d(smoothed loss) / d(log10 lr) at the steepest point (negative)
    divisor: float
    rule: str

    def as_dict(self) -> dict:
        return asdict(self)


def suggest(lrs: list[float], losses: list[float], beta: float = BETA, divisor: float = DIVISOR,
            skip_start: int = SKIP_START, diverge_factor: float = DIVERGE_FACTOR) -> Suggestion:
    """The suggested lr of a range test (the rule of the module docstring)."""
    if len(lrs) != len(losses):
        raise ValueError(f"{len(lrs)} learning rates but {len(losses)} losses")
    finite = [x if math.isfinite(x) else math.inf for x in losses]
    # Smooth only the finite prefix: one inf would poison every later average.
    first_bad = next((i for i, x in enumerate(finite) if not math.isfinite(x)), len(finite))
    smoothed = ema_smooth(finite[:first_bad], beta) + [math.inf] * (len(finite) - first_bad)
    div = divergence_index(finite, smoothed, diverge_factor)
    end = div if div is not None else len(lrs)
    if end - skip_start < 3:
        if div is None:
            raise RangeTestError(f"only {end} step(s): too few for a curve; give the ramp at least {skip_start + 3}")
        raise RangeTestError(f"only {end} step(s) before the loss diverged at lr {lrs[end]:g}; start the ramp lower "
                             "(lr_min)")
    low = min(range(skip_start, end), key=lambda i: smoothed[i])
    logs = [math.log10(x) for x in lrs]
    # Central differences inside the searched window [skip_start, low]; one-sided at its edges.
    best_i, best_slope = None, 0.0
    for i in range(skip_start, low + 1):
        a, b = max(i - 1, skip_start), min(i + 1, end - 1)
        if b == a:
            continue
        slope = (smoothed[b] - smoothed[a]) / (logs[b] - logs[a])
        if slope < best_slope:
            best_i, best_slope = i, slope
    if best_i is None or low == skip_start:
        raise RangeTestError("the smoothed loss never fell over the ramp "
                             f"({lrs[0]:g} .. {lrs[end - 1]:g}); raise lr_max or check the data")
    p, level, reached = drop_p_value(finite, low, end)
    if p >= ALPHA:
        raise RangeTestError(
            f"the loss did not fall beyond its batch-to-batch noise: the ramp's first third sits at {level:.3g} "
            f"(median), the steps before the lowest smoothed loss (lr {lrs[low]:g}) at {reached:.3g}, and a rank test "
            f"cannot tell them apart (p = {p:.2g}, needs < {ALPHA:g}); the minimum of such a curve is a lucky batch, "
            "not a learning rate. Use the size default, or run the test with more steps or a larger batch")
    return Suggestion(lr=lrs[low] / divisor, steepest_lr=lrs[best_i], steepest_index=best_i,
                      min_loss_lr=lrs[low], min_loss_index=low, diverged_at=div,
                      diverged_lr=lrs[div] if div is not None else None, slope=best_slope, divisor=divisor,
                      rule=f"lowest smoothed loss (EMA beta {beta:g}, bias-corrected) before divergence "
                           f"(> {diverge_factor:g}x the best), divided by {divisor:g}")
