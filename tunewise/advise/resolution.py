"""How finely the pilot's scoring can tell two methods apart: the pilot's runs as tunewise.decide measures them.

Both methods answer the same validation examples, so their gap is measured pair by pair (tunewise.decide.band:
a paired bootstrap and jackknife on the metric itself); from its band follow the call and the number of examples
a narrower band would need. Pure numbers: no torch, no files.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewise.decide import Band, Scores, measure_gap


@dataclass(frozen=True)
class PairedGap:
    n_train: int  # the training slice both methods were trained on
    band: Band  # full - adapter on the same validation examples

    @property
    def n_eval(self) -> int:
        return self.band.examples

    @property
    def gap(self) -> float:
        return self.band.gap

    @property
    def discordant(self) -> float:
        return self.band.discordant

    @property
    def half_width(self) -> float:
        """The band's half width: the smallest gap this measurement calls different from zero."""
        return self.band.half_width

    def interval(self) -> tuple[float, float]:
        return self.band.low, self.band.high

    def examples_needed(self, half_width: float) -> int:
        """Validation examples for a band of +- half_width (a fraction) at this per-example spread."""
        return self.band.needed_examples(100 * half_width) or self.n_eval

    def as_dict(self) -> dict:
        low, high = self.interval()
        return {"n_train": self.n_train, "n_eval": self.n_eval, "gap": self.gap, "discordant": self.discordant,
                "half_width": self.half_width, "low": low, "high": high}


def paired_gap(full: list, adapter: list, n_train: int) -> PairedGap:
    """full - adapter on the same examples, each given as its metric's (numerator, denominator) or a value."""
    if len(full) != len(adapter) or not full:
        raise ValueError("need the same examples (>= 1) scored by both methods")
    return PairedGap(n_train, measure_gap(Scores.from_pairs(adapter), Scores.from_pairs(full)))
