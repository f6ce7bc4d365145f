"""Metric arithmetic: pure functions of predictions, references and counts (no models, no files)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence


def accuracy(correct: Sequence[bool]) -> float:
    """Share of True; 0.0 for an empty list (nothing was right)."""
    return sum(bool(c) for c in correct) / len(correct) if correct else 0.0


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts; an empty denominator gives 0 (and P = R = F1 = 1 when all are 0,
    i.e. nothing was expected and nothing was predicted)."""
    if tp == fp == fn == 0:
        return 1.0, 1.0, 1.0
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def set_counts(predicted: Iterable[Hashable], expected: Iterable[Hashable]) -> tuple[int, int, int]:
    """(tp, fp, fn) of two multisets, e.g. the (slot, value) pairs of a meaning representation."""
    pc, ec = Counter(predicted), Counter(expected)
    tp = sum((pc & ec).values())
    return tp, sum(pc.values()) - tp, sum(ec.values()) - tp


def macro_f1(predictions: Sequence[str | None], references: Sequence[str],
             labels: Sequence[str] | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes (the given labels, else those in the references).

    A prediction outside the label set (None, or an unknown string) is a false negative for its reference class.
    """
    classes = list(labels) if labels else sorted(set(references))
    if not classes:
        return 0.0
    f1s = []
    for c in classes:
        tp = sum(1 for p, r in zip(predictions, references, strict=True) if p == c and r == c)
        fp = sum(1 for p, r in zip(predictions, references, strict=True) if p == c and r != c)
        fn = sum(1 for p, r in zip(predictions, references, strict=True) if p != c and r == c)
        if tp == fp == fn == 0:
            continue  # a class absent from both sides says nothing about this test set
        f1s.append(prf(tp, fp, fn)[2])
    return sum(f1s) / len(f1s) if f1s else 0.0


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan
