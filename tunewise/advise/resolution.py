"""How finely the pilot's scoring can tell two methods apart. Both methods answer the same validation examples,
so their difference is measured pair by pair: what the two get right together cancels, and only the examples on
which they differ carry noise. From that noise follow the gap's band and the number of examples a smaller band
would need. Pure numbers: no torch, no files.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Z = 2.0  # about 95%, as in curves.py


def item_value(record: dict) -> float:
    """One example's score in [0, 1] from an evaluation record: its F1 when the scorer counted set members
    (tp / fp / fn, e.g. slot F1), else 1 or 0 for right or wrong."""
    counts = record.get("counts") or {}
    if {"tp", "fp", "fn"} <= counts.keys():
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return 1.0 if record.get("correct") else 0.0


@dataclass
class PairedGap:
    n_train: int  # the training slice both methods were trained on
    n_eval: int  # examples both were scored on
    gap: float  # full - adapter as a fraction of the score range: the metric's own gap, else the per-example mean
    sd: float  # standard deviation of that per-example difference (at least one pseudo-pair's worth)
    discordant: float  # share of examples on which the two methods' scores differ

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n_eval)

    @property
    def half_width(self) -> float:
        """The band's half width: the smallest gap this measurement calls different from zero."""
        return Z * self.se

    def interval(self) -> tuple[float, float]:
        return self.gap - self.half_width, self.gap + self.half_width

    def examples_needed(self, half_width: float) -> int:
        """Validation examples for a band of +- half_width at this per-example spread."""
        return math.ceil((Z * self.sd / half_width) ** 2)

    def as_dict(self) -> dict:
        low, high = self.interval()
        return asdict(self) | {"se": self.se, "low": low, "high": high}


def paired_gap(full: list[float], adapter: list[float], n_train: int, gap: float | None = None) -> PairedGap:
    """The per-example difference full - adapter on the same examples. Its spread counts one pseudo-pair in each
    direction (as binomial_sigma's Laplace smoothing does), so that 40 examples on which both agree do not claim
    a band of zero. `gap`: the difference of the task's own metric, when it is not the mean of the per-example
    values (slot F1 summed over all examples, macro F1); the band keeps the per-example spread (exact for
    accuracy, an approximation for those)."""
    if len(full) != len(adapter) or not full:
        raise ValueError("need the same examples (>= 1) scored by both methods")
    d = [f - a for f, a in zip(full, adapter, strict=True)]
    n = len(d)
    mean = sum(d) / n
    smoothed = [*d, 1.0, -1.0]
    m2 = sum(x * x for x in smoothed) / len(smoothed) - (sum(smoothed) / len(smoothed)) ** 2
    sd = math.sqrt(max(m2, 0.0) * len(smoothed) / (len(smoothed) - 1))
    return PairedGap(n_train, n, mean if gap is None else gap, sd, sum(1 for x in d if abs(x) > 1e-12) / n)
