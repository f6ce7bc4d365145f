"""The learning-rate range test's math (Smith 2015/2017, "Cyclical Learning Rates"; the fastai lr finder): pure
numbers in, numbers out, apart from the training that produces the losses (tunewise/train/find_lr.py).

The rule tunewise uses (documented in the README and `tunewise train --help`):
  1. the lr grows exponentially from lr_min to lr_max, one optimizer step per value;
  2. the loss is smoothed with an exponential moving average with bias correction (beta, like Adam's moments);
  3. the test stops at divergence: a smoothed loss above DIVERGE_FACTOR x the best so far, or a non-finite loss;
  4. the suggestion is the lr of the lowest smoothed loss before divergence divided by DIVISOR (10): the fastai
     finder's "minimum / 10" rule (Smith's observation that the best lr sits about a decade below the point where
     the loss stops falling). The steepest-descent point is reported too, but it is not the rule: over a short
     ramp of noisy batches its position moves with single batches (on the tiny base it sat 3-5x below the best lr
     of a sweep in one pair of ramps, 100-400x below in another), while the minimum of the smoothed curve is stable.
  5. no suggestion when that minimum is not clearly below the ramp's starting level: less than MIN_DROP_NOISE times
     the start's batch-to-batch noise (as it remains after smoothing). Then the curve is noise and callers fall
     back to the size default.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

DIVERGE_FACTOR = 4.0  # smoothed loss above 4x the best so far = diverged (fastai's rule)
BETA = 0.8  # EMA weight; a short ramp (tens of steps) needs a shorter memory than fastai's 0.98 over 100 steps
DIVISOR = 10.0  # suggestion = lowest-loss lr / DIVISOR (see the module docstring)
SKIP_START = 2  # the first points' bias-corrected average rests on one or two losses: too noisy for a slope
# The lowest smoothed loss must sit this many noise units (start_level) below the ramp's starting level: the measured
# ramps that trained (tiny base and smollm2, structured) sat 3.7-28 units below, the noise-only ones (tiny base, sql
# and math, 8-row batches; benchmarks/RESULTS.md) 0.4-1.7.
MIN_DROP_NOISE = 2.5


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


def start_level(losses: list[float], beta: float = BETA) -> tuple[float, float]:
    """(level, noise) of a ramp's start: the median loss of its first third, where the lr is still small, and the
    batch-to-batch noise of those losses as it remains after the EMA. The noise comes from differences of
    neighbouring losses (MAD scaled to a standard deviation, / sqrt 2), so a steady fall is not mistaken for noise;
    the EMA divides a white noise's std by sqrt((1 + beta) / (1 - beta)). On short ramps of small batches one
    batch's loss can differ from the next by more than the whole effect of the lr (tiny base, sql: 0.0, then 3.2)."""
    head = losses[: max(4, len(losses) // 3)]
    diffs = [b - a for a, b in zip(head, head[1:], strict=False)]
    centre = statistics.median(diffs)
    spread = 1.4826 * statistics.median(abs(d - centre) for d in diffs) / math.sqrt(2)
    return statistics.median(head), spread * math.sqrt((1 - beta) / (1 + beta))


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
    level, noise = start_level(finite[:end], beta)
    if level - smoothed[low] <= MIN_DROP_NOISE * noise:
        raise RangeTestError(
            f"the loss did not fall beyond its batch-to-batch noise: it starts at {level:.3g} (noise of the smoothed "
            f"curve {noise:.2g}) and its lowest smoothed value is {smoothed[low]:.3g} at lr {lrs[low]:g}; the "
            "minimum of such a curve is one lucky batch, not a learning rate. Use the size default, or run the "
            "test with more steps or a larger batch")
    return Suggestion(lr=lrs[low] / divisor, steepest_lr=lrs[best_i], steepest_index=best_i,
                      min_loss_lr=lrs[low], min_loss_index=low, diverged_at=div,
                      diverged_lr=lrs[div] if div is not None else None, slope=best_slope, divisor=divisor,
                      rule=f"lowest smoothed loss (EMA beta {beta:g}, bias-corrected) before divergence "
                           f"(> {diverge_factor:g}x the best), divided by {divisor:g}")
