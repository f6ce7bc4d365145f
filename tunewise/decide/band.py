"""A gap between two methods and its 95% band, from the examples both answered and the seeds each was trained with.

Both methods answer the same test examples, so the gap is measured pair by pair: a paired bootstrap resamples the
examples (the same draw for both methods, so what both get right cancels) and, when a method was trained with
several seeds, resamples its seeds too. Each example contributes a numerator and a denominator to its run's
metric (accuracy: right / 1; slot or field F1: 2tp / (2tp + fp + fn)), so every resample recomputes the metric
itself -- micro F1 is not the mean of per-example F1s -- and the band is centred on the metric's own gap.
Coverage is tested by simulation (tests/test_decide.py), not assumed from a formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

from tunewise.decide.margins import CONFIDENCE

# sd of one example's paired difference full - LoRA, as the pilot measured it on smollm2's four tasks (RESULTS.md,
# "Pilot at the study's own budget": +-11.5 to +-17 points at 40 examples, discordance 25-40%); for planning only
TYPICAL_SPREAD = 0.45
DRAWS = 1000  # bootstrap resamples: the band's ends move by a fraction of a point between runs at this count
Z = 1.959964  # the normal 97.5% point: a 95% band is +-Z standard errors


def t_quantile(df: int) -> float:
    """Student's t 97.5% point with df degrees of freedom (a 95% band on a mean estimated from df + 1 values)."""
    return float(student_t.ppf(1 - (1 - CONFIDENCE) / 2, df))


def item_pair(record: dict, primary: str | None = None) -> tuple[float, float]:
    """One scored example's (numerator, denominator) of the metric: set counts for an F1 metric, a custom scorer's
    per-example number for its headline metric (`values`), else right / wrong."""
    counts = record.get("counts") or {}
    if (primary or "").endswith("f1") and {"tp", "fp", "fn"} <= counts.keys():
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        return 2.0 * tp, 2.0 * tp + fp + fn
    value = (record.get("values") or {}).get(primary, record.get("value"))  # a custom scorer's per-example number
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), 1.0
    return (1.0 if record.get("correct") else 0.0), 1.0


@dataclass(frozen=True)
class Scores:
    """One method's per-example scores: numerator and denominator, one row per training seed, one column per
    test example (the same examples, in the same order, for every method compared)."""

    num: np.ndarray  # (seeds, examples)
    den: np.ndarray

    @property
    def seeds(self) -> int:
        return self.num.shape[0]

    @property
    def examples(self) -> int:
        return self.num.shape[1]

    @classmethod
    def from_pairs(cls, items: list) -> Scores:
        """One run's per-example (numerator, denominator) pairs, or plain values in [0, 1] (a denominator of 1)."""
        pairs = np.array([it if isinstance(it, (list, tuple)) else (it, 1.0) for it in items], dtype=float)
        return cls(pairs[None, :, 0], pairs[None, :, 1])

    def per_seed(self) -> np.ndarray:
        """The metric of each seed's run."""
        return _ratio(self.num.sum(axis=1), self.den.sum(axis=1))

    def metric(self) -> float:
        """The method's score: its seeds' mean."""
        return float(self.per_seed().mean())


def scores_from_records(runs: list[list[dict]], primary: str | None = None) -> Scores:
    """Scores from evaluation records (one list per seed, each in the test file's order)."""
    if not runs or not runs[0] or len({len(r) for r in runs}) != 1:
        raise ValueError("need >= 1 seed, each with the same >= 1 scored examples")
    pairs = np.array([[item_pair(rec, primary) for rec in run] for run in runs], dtype=float)
    return Scores(pairs[..., 0], pairs[..., 1])


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 1.0 where nothing was there to find (den 0: no slots in the reference, none predicted)."""
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)


@dataclass(frozen=True)
class Band:
    """b - a as fractions of the metric's range, with the 95% band and what its width is made of."""

    gap: float
    low: float
    high: float
    examples: int
    seeds: tuple[int, int]  # (a's, b's)
    half_width_examples: float  # the band's half width from the examples alone
    half_width_seeds: float  # ... from the seeds alone (0 with one seed each: that spread is then unmeasured)
    discordant: float  # share of examples on which the two methods' scores differ
    seeds_df: int | None = None  # the seeds' part taken at Student's t with this many degrees of freedom (replicates)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def points(self) -> tuple[float, float, float]:
        return 100 * self.gap, 100 * self.low, 100 * self.high

    def needed_examples(self, half_width_points: float) -> int | None:
        """About how many examples a band of +-half_width would need at this spread (the band narrows as
        1/sqrt(examples)); None when the seeds' spread alone is wider: more seeds, not examples, are needed."""
        room = (half_width_points / 100) ** 2 - self.half_width_seeds ** 2
        if room <= 0:
            return None
        return max(self.examples, math.ceil(self.examples * self.half_width_examples ** 2 / room))

    def needed_seeds(self, half_width_points: float) -> int | None:
        """Seeds per method for the seeds' part of the band to fit inside +-half_width; None with one seed (its
        spread is unmeasured)."""
        if min(self.seeds) < 2:
            return None
        target = half_width_points / 100 / math.sqrt(2)  # leave half the variance to the examples
        if self.seeds_df is None:
            return max(min(self.seeds), math.ceil(min(self.seeds) * (self.half_width_seeds / target) ** 2))
        # the spread of one seed's gap, then the fewest seeds whose t interval fits (t narrows as seeds are added)
        k = min(self.seeds)
        per_seed = self.half_width_seeds / t_quantile(self.seeds_df) * math.sqrt(k)
        while t_quantile(k - 1) * per_seed / math.sqrt(k) > target and k < 10_000:
            k += 1
        return k


def planned_half_width(examples: int, spread: float = TYPICAL_SPREAD) -> float:
    """The band's expected half width, in points, on this many paired examples (a plan's estimate: measured
    bands replace it)."""
    return 100 * Z * small_sample_factor(examples) * spread / math.sqrt(max(examples, 1))


def measure_gap(a: Scores, b: Scores, draws: int = DRAWS, seed: int = 0) -> Band:
    """The gap b - a with its symmetric 95% band. The examples' part is the wider of a paired bootstrap and a
    jackknife (with Student's t and the bootstrap's small-sample correction: on 40 examples the bootstrap alone
    covered 92.5% for slot F1); the seeds' part is a bootstrap over each method's seeds; the two add in
    quadrature. No narrower than the rule of three: no disagreement seen in n examples still allows a rate of
    3/n."""
    if a.examples != b.examples or a.examples < 1:
        raise ValueError("both methods must be scored on the same >= 1 examples")
    rng = np.random.default_rng(seed)
    n = a.examples
    gap = b.metric() - a.metric()
    boot = _half(_example_deviations(a, b, gap, rng, draws)) * small_sample_factor(n)
    half_examples = max(boot, jackknife_half_width(a, b), 3.0 / n)
    half_seeds = _half(_seed_deviations(b, rng, draws) - _seed_deviations(a, rng, draws))
    half = math.hypot(half_examples, half_seeds)
    per_a, per_b = _ratio(a.num, a.den).mean(axis=0), _ratio(b.num, b.den).mean(axis=0)
    return Band(gap=float(gap), low=float(gap - half), high=float(gap + half), examples=n,
                seeds=(a.seeds, b.seeds), half_width_examples=float(half_examples),
                half_width_seeds=float(half_seeds), discordant=float(np.mean(np.abs(per_b - per_a) > 1e-12)))


def _half(deviations: np.ndarray) -> float:
    """Half the width of the central 95% of resampled deviations."""
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(deviations, [tail, 1 - tail])
    return float(high - low) / 2


def small_sample_factor(n: int) -> float:
    """How much wider than the bootstrap's spread a band on n examples must be: the bootstrap's spread is
    sqrt((n-1)/n) of the sample's, and a mean estimated from n values needs Student's t quantile, not the
    normal one (Cornish-Fisher expansion of t's 97.5% point; without it slot F1 covered 92.8% at 40 examples)."""
    if n < 2:
        return 1.0
    z, nu = Z, n - 1
    t = z + (z**3 + z) / (4 * nu) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)
    return math.sqrt(n / (n - 1)) * t / z


def jackknife_half_width(a: Scores, b: Scores) -> float:
    """The gap's 95% half width from leave-one-example-out recomputations (Student's t): slightly conservative
    where the bootstrap undercovers (slot F1 on 40 examples: 92.5% with the bootstrap alone)."""
    n = a.examples
    if n < 2:
        return 0.0

    def left_out(s: Scores) -> np.ndarray:  # (n,): the seeds' mean metric without example i
        num, den = s.num.sum(axis=1, keepdims=True), s.den.sum(axis=1, keepdims=True)
        return _ratio(num - s.num, den - s.den).mean(axis=0)

    theta = left_out(b) - left_out(a)
    variance = (n - 1) / n * float(np.sum((theta - theta.mean()) ** 2))
    return Z * small_sample_factor(n) * math.sqrt((n - 1) / n) * math.sqrt(variance)  # t * se


def _example_deviations(a: Scores, b: Scores, gap: float, rng: np.random.Generator, draws: int) -> np.ndarray:
    """Resampled gap - gap, the examples drawn with replacement (one draw shared by both methods and all seeds)."""
    picks = rng.integers(0, a.examples, size=(draws, a.examples))

    def metric(s: Scores) -> np.ndarray:  # (draws,): the seeds' mean metric on each resample
        return _ratio(s.num[:, picks].sum(axis=2), s.den[:, picks].sum(axis=2)).mean(axis=0)

    return metric(b) - metric(a) - gap


def _seed_deviations(s: Scores, rng: np.random.Generator, draws: int) -> np.ndarray:
    """Resampled seed mean - seed mean for one method, its seeds drawn with replacement (zero with one seed)."""
    k = s.seeds
    if k < 2:
        return np.zeros(draws)
    per_seed = s.per_seed()
    picks = rng.integers(0, k, size=(draws, k))
    return (per_seed[picks].mean(axis=1) - per_seed.mean()) * math.sqrt(k / (k - 1))
