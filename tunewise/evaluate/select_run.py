"""`tunewise data select`: from a noisy training file to a clean, diverse subset of k records, with a reason for
every record left out.

    1. what data check knows is bad      data/select_filter.py (duplicates, conflicts, empty / malformed /
                                         truncated answers, test leakage)
    2. the base's scores                 evaluate/select_scores.py (IFD, answer loss, prompt embeddings; records
                                         over the base's context are left out here)
    3. the pick                          analysis/select_pick.py (worst IFD share dropped, coverage, k-center)
    4. the subset, select_report.json and its HTML page (data/select_write.py, evaluate/select_report.py)

Every check that can refuse (the input, the base, --k, --out) runs before the first write; nothing is written
unless the whole selection succeeded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunewise.analysis.select_pick import DROP_SHARE, Pick, pick
from tunewise.data.audit import AuditOptions
from tunewise.data.select_filter import LeftOut, Screened, coverage_groups, readmit_near, screen
from tunewise.data.select_write import check_out
from tunewise.data.sources import kind_of
from tunewise.errors import TunewiseError
from tunewise.evaluate.select_scores import Scores, score_records
from tunewise.models import load_config, resolve_base

BY = ("quality", "diversity")


@dataclass
class SelectOptions:
    k: int
    base: str = "tiny"
    test: str | None = None
    by: tuple[str, ...] = BY
    drop_share: float = DROP_SHARE
    near_threshold: float = 0.8
    fmt: str = "auto"
    split: str = "train"
    output_format: str = "auto"
    force: bool = False
    progress: bool = True


@dataclass
class Selection:
    """What the selection decided: kept lines and a LeftOut for every other row."""

    kept: list[int]
    left_out: list[LeftOut]
    screened: Screened
    scores: Scores
    scored: list[int] = field(default_factory=list)  # candidate indices that were scored (fit the context)
    pick: Pick | None = None


def parse_by(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in BY]
    if not parts or unknown:
        raise TunewiseError(f"--by '{text}': {', '.join(unknown) or 'nothing'} is not a criterion",
                            "use quality, diversity or quality,diversity")
    return parts


def preflight(data: Path, out: Path, opts: SelectOptions) -> None:
    """The refusals that need no pass over the data: --k, --by, --out, a missing input or base."""
    if opts.k < 1:
        raise TunewiseError(f"--k must be a positive number of records (got {opts.k})", "give e.g. --k 1000")
    parse_by(",".join(opts.by))
    kind_of(data)  # a missing file is one line
    if opts.test is not None:
        kind_of(opts.test)
    check_out(out, data, opts.force)
    ref = resolve_base(opts.base)
    if ref.path is None:
        load_config(opts.base)  # an unreachable hub id is one line, before the scan


def choose(data: Path, opts: SelectOptions) -> Selection:
    audit_opts = AuditOptions(near_threshold=opts.near_threshold, fmt=opts.fmt, split=opts.split,
                              output_format=opts.output_format)
    t0 = time.perf_counter()
    screened = readmit_near(screen(data, audit_opts, opts.test), opts.k)
    screen_s = time.perf_counter() - t0
    total = len(screened.candidates) + len(screened.left_out)
    if opts.k > total:
        raise TunewiseError(f"--k {opts.k} is more than the {total} records in {data}",
                            f"give --k {total} or less")
    scores = score_records(opts.base, screened.candidates, data, progress=opts.progress)
    left = list(screened.left_out)
    scored = []
    for i, rec in enumerate(screened.candidates):
        if scores.over_length[i]:
            left.append(LeftOut(rec.line, "over-length", f"{scores.tokens[i]} tokens, more than the base's context "
                                                         f"of {scores.context}"))
        else:
            scored.append(i)
    if opts.k > len(scored):
        raise TunewiseError(f"--k {opts.k} is more than the {len(scored)} records left after leaving out "
                            f"{total - len(scored)} known-bad ones (see `tunewise data check {data}`)",
                            f"give --k {len(scored)} or less")
    groups = [coverage_groups(screened.candidates[i], screened) for i in scored]
    idx = np.asarray(scored, dtype=np.int64)
    t1 = time.perf_counter()
    p = pick(opts.k, scores.ifd[idx], scores.embeddings[idx], groups, opts.by, opts.drop_share)
    scores.seconds.update(screen=round(screen_s, 3), pick=round(time.perf_counter() - t1, 3))
    left += _pick_reasons(screened, scores, idx, p, opts)
    kept = sorted(screened.candidates[idx[i]].line for i in p.chosen)
    return Selection(kept, sorted(left, key=lambda x: x.line), screened, scores, scored, p)


def _pick_reasons(screened: Screened, scores: Scores, idx: np.ndarray, p: Pick, opts: SelectOptions) -> list[LeftOut]:
    rec = screened.candidates
    out = []
    worst = f"the worst {len(p.low_quality)} of {len(idx)} by IFD"
    for i in p.low_quality:
        j = idx[i]
        out.append(LeftOut(rec[j].line, "low-quality", f"low quality score: IFD {scores.ifd[j]:.3f}, answer loss "
                                                        f"{scores.answer_loss[j]:.3f} ({worst})"))
    for i, near, dist in zip(p.not_chosen, p.nearest, p.distance, strict=True):
        other = rec[idx[near]].line
        out.append(LeftOut(rec[idx[i]].line, "not-chosen", f"not chosen for diversity: close to kept line {other} "
                                                           f"(cosine distance {dist:.3f})", other))
    return out
