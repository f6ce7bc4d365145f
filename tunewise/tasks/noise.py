"""Planted noise: a training split with a known share of bad records, so data selection can be scored.

`tasks make TASK --noise P` replaces round(P * n) records of the training split, spread over the file, with one of
four kinds of bad record (in equal numbers); meta.json lists each bad line and its kind:

    wrong-answer      the record's prompt with another record's (different) answer
    truncated-answer  the answer cut off at 30-70% of its characters
    duplicate         an exact copy of an earlier clean record (`of` names its line)
    off-task          an example of another task
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from dataclasses import dataclass

from tunewise.errors import TunewiseError
from tunewise.tasks.base import TaskExample

KINDS = ("wrong-answer", "truncated-answer", "duplicate", "off-task")
NOISE_SEED_OFFSET = 7_919  # the noise draws from its own stream: the clean records are those of --noise 0


@dataclass(frozen=True)
class Planted:
    line: int  # 1-based line of the training file
    kind: str
    of: int | None = None  # for a duplicate: the line it copies

    def as_dict(self) -> dict:
        return {"line": self.line, "kind": self.kind, **({"of": self.of} if self.of is not None else {})}


def check_share(share: float) -> None:
    if not 0.0 <= share < 1.0:
        raise TunewiseError(f"--noise must be a share from 0 up to (not including) 1 (got {share})",
                            "give e.g. --noise 0.3 for 30% bad training records")


def add_noise(examples: list[TaskExample], share: float, seed: int, off_task: list[TaskExample]) -> tuple[list[TaskExample],
                                                                                                  list[Planted]]:
    """(examples with round(share * n) of them replaced by bad ones, what was planted where)."""
    check_share(share)
    n = len(examples)
    rng = random.Random(seed * 1_000_003 + NOISE_SEED_OFFSET)
    positions = sorted(rng.sample(range(1, n), min(round(share * n), max(n - 1, 0))))  # line 1 stays clean
    kinds = [KINDS[i % len(KINDS)] for i in range(len(positions))]
    rng.shuffle(kinds)
    bad = set(positions)
    clean = [i for i in range(n) if i not in bad]
    out = list(examples)
    planted = []
    for pos, kind in zip(positions, kinds, strict=True):
        ex = examples[pos]
        of = None
        if kind == "duplicate":
            src = clean[rng.randrange(bisect.bisect_left(clean, pos))]  # a clean record before this line
            out[pos], of = examples[src], src + 1
        elif kind == "wrong-answer":
            others = [e.completion for e in rng.sample(examples, min(n, 20)) if e.completion != ex.completion]
            out[pos] = TaskExample(ex.prompt, others[0] if others else ex.completion + " not", ex.extra)
        elif kind == "truncated-answer":
            out[pos] = TaskExample(ex.prompt, _cut(ex.completion, rng), ex.extra)
        else:
            out[pos] = off_task[len(planted) % len(off_task)]
        planted.append(Planted(pos + 1, kind, of))
    return out, planted


def _cut(answer: str, rng: random.Random) -> str:
    """The answer's first 30-70% of characters (at least one visible character, always shorter)."""
    lead = len(answer) - len(answer.lstrip())
    body = answer[lead:]
    keep = max(1, min(len(body) - 1, round(len(body) * rng.uniform(0.3, 0.7))))
    return answer[:lead] + body[:keep] if len(body) > 1 else answer[:lead] + "."


def noise_meta(share: float, planted: list[Planted]) -> dict:
    return {"share": share, "bad_records": len(planted), "kinds": dict(Counter(p.kind for p in planted)),
            "bad": [p.as_dict() for p in planted]}
