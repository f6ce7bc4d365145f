"""Choosing k records for quality and coverage together (pure numpy; `data select` feeds it scores and embeddings).

    quality     drop the worst-scored share (never so many that fewer than k are left)
    coverage    every group (a label, a slot type) the candidates have gets its best-scored record first
    diversity   k-center greedy (Sener & Savarese 2018) on unit embeddings: repeatedly take the record farthest
                from everything chosen, so the subset covers the space instead of piling up in dense regions

With only `quality` the best-scored k are kept (coverage first); with only `diversity` nothing is dropped by score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DROP_SHARE = 0.25


@dataclass
class Pick:
    chosen: np.ndarray  # candidate indices kept, ascending
    low_quality: np.ndarray  # dropped for their score
    not_chosen: np.ndarray  # passed the score, left out for diversity
    nearest: np.ndarray  # for each not_chosen index: the chosen record closest to it
    distance: np.ndarray  # ... and its distance (1 - cosine)
    uncovered: list[str] = field(default_factory=list)  # groups with no record in the subset (k too small)


def pick(k: int, badness: np.ndarray, embeddings: np.ndarray, groups: list[set[str]],
         by: tuple[str, ...] = ("quality", "diversity"), drop_share: float = DROP_SHARE) -> Pick:
    """k of len(badness) candidates; badness: higher is worse (NaN counts as worst)."""
    n = len(badness)
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in 1..{n}")
    bad = np.where(np.isnan(badness), np.inf, badness)
    rank = np.argsort(bad, kind="stable")  # best first
    n_drop = 0
    if "quality" in by:
        n_drop = n - k if "diversity" not in by else min(n - k, math.ceil(drop_share * n))
    dropped = set(rank[n - n_drop:].tolist()) if n_drop else set()
    seeds, uncovered = _coverage_seeds(k, rank, dropped, groups)
    dropped -= set(seeds)
    pool = np.asarray([i for i in rank.tolist() if i not in dropped])
    if "diversity" in by:
        chosen = _k_center(embeddings, pool, seeds, k)
    else:
        chosen = list(dict.fromkeys([*seeds, *pool.tolist()]))[:k]
    chosen_arr = np.sort(np.asarray(chosen, dtype=np.int64))
    rest = np.setdiff1d(pool, chosen_arr)
    nearest, distance = _nearest(embeddings, rest, chosen_arr)
    low = np.asarray(sorted(dropped), dtype=np.int64)
    return Pick(chosen_arr, low, rest, nearest, distance, uncovered)


def _coverage_seeds(k: int, rank: np.ndarray, dropped: set[int], groups: list[set[str]]) -> tuple[list[int], list[str]]:
    """The best-scored record of each group, rarest group first; from the dropped share only when the group has
    nothing better. Groups that do not fit in k are returned as uncovered."""
    members: dict[str, list[int]] = {}
    for i in rank.tolist():  # best first, so each list is best first
        for g in groups[i]:
            members.setdefault(g, []).append(i)
    seeds: list[int] = []
    covered: set[str] = set()
    uncovered: list[str] = []
    for g in sorted(members, key=lambda name: (len(members[name]), name)):
        if g in covered:
            continue
        if len(seeds) >= k:
            uncovered.append(g)
            continue
        kept = [i for i in members[g] if i not in dropped]
        best = kept[0] if kept else members[g][0]
        seeds.append(best)
        covered |= groups[best]
    return seeds, uncovered


def _k_center(emb: np.ndarray, pool: np.ndarray, seeds: list[int], k: int) -> list[int]:
    """Greedy k-center over pool (indices into emb): start from the seeds (or the best-scored record)."""
    x = emb[pool].astype(np.float32)
    start = [int(np.flatnonzero(pool == s)[0]) for s in seeds] or [0]  # pool is best first
    chosen = list(start)
    dist = np.full(len(pool), np.inf, dtype=np.float32)
    for j in start:
        dist = np.minimum(dist, 1.0 - x @ x[j])
    dist[chosen] = -np.inf
    while len(chosen) < min(k, len(pool)):
        j = int(np.argmax(dist))
        chosen.append(j)
        dist = np.minimum(dist, 1.0 - x @ x[j])
        dist[j] = -np.inf
    return pool[chosen].tolist()


def _nearest(emb: np.ndarray, rest: np.ndarray, chosen: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    nearest = np.zeros(len(rest), dtype=np.int64)
    distance = np.zeros(len(rest), dtype=np.float32)
    if len(rest) == 0 or len(chosen) == 0:
        return nearest, distance
    c = emb[chosen].astype(np.float32)
    for lo in range(0, len(rest), chunk):
        sim = emb[rest[lo:lo + chunk]].astype(np.float32) @ c.T
        best = sim.argmax(1)
        nearest[lo:lo + chunk] = chosen[best]
        distance[lo:lo + chunk] = 1.0 - sim[np.arange(len(best)), best]
    return nearest, distance
