"""A gap measured over replicates: each seed trained on its own data and scored on its own test set.

The study draws a fresh training and test set for every seed, so within a seed both methods answer the same
examples (paired) but different seeds answer different ones: the seeds' examples cannot be lined up as
`measure_gap`'s columns, and pooling them as one run would leave the training seeds' spread out of the band. Here
the gap is the mean of the seeds' paired gaps and its band has measure_gap's two parts, added in quadrature: the
examples' part, each seed's own paired band (bootstrap, jackknife, rule of three) averaged, at z; and the seeds'
part, how much more the seeds' gaps scatter than their test sets' sampling explains (method of moments, as in a
random-effects meta-analysis; unmeasured with one seed), at Student's t with k - 1 degrees of freedom.

Coverage, by simulation (tests/test_decide.py): 94-98% while the seeds' spread of the gap is at most the test
set's sampling spread (wide at none: a chance excess is taken at t(2)); about 89% when it is 1.5-3x that, where 3
seeds estimate it poorly -- the call then asks for more seeds (its needed_seeds).
"""

from __future__ import annotations

import math

import numpy as np

from tunewise.decide.band import DRAWS, Band, Scores, Z, measure_gap, t_quantile


def variance_parts(gaps: np.ndarray, example_var: np.ndarray) -> tuple[float, float]:
    """(examples' part, seeds' part) of the variance of the mean gap over k replicates: each replicate's sampling
    variance averaged, and the between-replicate variance left once that sampling is taken out (never below 0)."""
    k = len(gaps)
    examples = float(example_var.sum()) / k**2
    if k < 2:
        return examples, 0.0
    excess = float(np.var(gaps, ddof=1) - example_var.mean())
    return examples, max(excess, 0.0) / k


def half_width(examples_var: float, seeds_var: float, k: int) -> float:
    """The 95% half width of the mean gap: each part at its own quantile (the examples' at z, the seeds' at
    Student's t with k - 1 degrees of freedom), added in quadrature."""
    return math.hypot(Z * math.sqrt(examples_var), t_quantile(max(k - 1, 1)) * math.sqrt(seeds_var))


def measure_replicated_gap(a: list[Scores], b: list[Scores], draws: int = DRAWS, seed: int = 0) -> Band:
    """The gap b - a over replicates (replicate i: one seed of a and of b, scored on the same examples), with its
    95% band."""
    if not a or len(a) != len(b) or any(x.seeds != 1 or y.seeds != 1 for x, y in zip(a, b, strict=True)):
        raise ValueError("need >= 1 replicate, each one seed of both methods on the same examples")
    bands = [measure_gap(x, y, draws, seed + i) for i, (x, y) in enumerate(zip(a, b, strict=True))]
    gaps = np.array([band.gap for band in bands])
    example_var = np.array([(band.half_width_examples / Z) ** 2 for band in bands])
    examples_var, seeds_var = variance_parts(gaps, example_var)
    n = sum(band.examples for band in bands)
    half_examples = Z * math.sqrt(examples_var)
    k = len(bands)
    half = max(half_width(examples_var, seeds_var, k), half_examples, 3.0 / n)
    gap = float(gaps.mean())
    discordant = sum(band.discordant * band.examples for band in bands) / n
    return Band(gap=gap, low=gap - half, high=gap + half, examples=n, seeds=(len(a), len(b)),
                half_width_examples=half_examples, half_width_seeds=math.sqrt(max(half**2 - half_examples**2, 0.0)),
                discordant=discordant, seeds_df=k - 1 if k > 1 else None)
