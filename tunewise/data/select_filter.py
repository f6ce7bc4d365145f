"""What `data select` leaves out before any model runs: what `data check` already knows is bad, per record.

The findings are data check's own (tunewise.data.audit: the schema pass, exact-duplicate and conflict keys, the
MinHash near-duplicate clusters and eval leakage; audit_content: the target-format checkers and label counts);
this module only turns them into one reason per left-out line, naming the line it repeats or contradicts. The
first reason found wins, in the order of REASONS.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from tunewise.data import dedup
from tunewise.data.audit import AuditOptions, _h, _near, _scan
from tunewise.data.audit_content import FORMATS, FormatStats, LabelStats
from tunewise.data.schema import Checked
from tunewise.errors import TunewiseError

# reason codes, in the order they are decided; the later ones come from the scores and the pick
REASONS = ("invalid", "empty-answer", "duplicate", "test-leakage", "conflict", "near-duplicate", "malformed-answer",
           "truncated-answer", "rare-answer", "over-length", "low-quality", "not-chosen")
MIN_LABEL = 3  # a label with fewer records than this is not a class to keep represented (nor learnable)


@dataclass
class LeftOut:
    line: int
    reason: str  # one of REASONS
    detail: str  # what the report shows: "exact duplicate of line 12"
    other: int | None = None  # the line it repeats, contradicts or leaks from

    def as_dict(self) -> dict:
        return {"line": self.line, "reason": self.reason, "detail": self.detail, "other": self.other}


@dataclass
class Screened:
    candidates: list[Checked]  # valid records nothing is known against, in file order
    left_out: list[LeftOut]
    rows: int  # valid + invalid rows read
    answer_format: str | None  # json | mr | sql when the targets are in one, else None
    valid: list[Checked] = field(default_factory=list)  # every valid record (coverage before selection)
    label_counts: Counter = field(default_factory=Counter)
    label_like: bool = False  # answers come from a small label set
    labels: set[str] = field(default_factory=set)  # its classes (labels_of)
    # near duplicates whose answers pass every check: redundant, not wrong, so they come back (readmit_near) when
    # --k asks for more records than the distinct ones left
    held_back: list[Checked] = field(default_factory=list)
    readmitted: int = 0  # near duplicates that came back as candidates


class _Collect:
    """Keeps every valid record the scan sees (the audit keeps only hashes)."""

    def __init__(self) -> None:
        self.records: list[Checked] = []

    def add(self, rec: Checked) -> None:
        self.records.append(rec)


def screen(path: str | Path, opts: AuditOptions, test_path: str | Path | None = None) -> Screened:
    """Valid records with nothing against them, and a reason for every other row of `path`."""
    opts = replace(opts, max_problems=10**9, model=None)  # every bad line's own problem, for its reason
    collect, labels, formats = _Collect(), LabelStats(), FormatStats(opts.output_format)
    scan = _scan(Path(path), opts, [collect, labels, formats])
    if not collect.records:
        first = scan.log.problems[0] if scan.log.problems else None
        raise TunewiseError(f"{path}: no valid records to select from" + (f" ({first})" if first else ""),
                            f"run `tunewise data check {path}` to see every problem")
    out: dict[int, LeftOut] = {}
    _invalid(scan, out)
    _duplicates(scan, collect.records, out)
    if test_path is not None:
        _leakage(scan, collect.records, Path(test_path), opts, out)
    _conflicts(scan, collect.records, out)  # exact and near duplicates vote too
    near = set()
    for line, kept in _near(scan, opts.near_threshold)["_kept_line"].items():
        if line not in out:
            near.add(line)
            out[line] = LeftOut(line, "near-duplicate", f"near duplicate of line {kept} (word 3-gram Jaccard >= "
                                                        f"{opts.near_threshold})", kept)
    fmt = formats.result()
    answer_format = fmt["format"] if fmt and fmt["valid_share"] >= 0.5 else None
    like = labels.result() is not None or _label_like(labels.counts, labels.n)
    problems = {rec.line: _answer_problem(rec, answer_format, labels.counts if like else None)
                for rec in collect.records if rec.line not in out or rec.line in near}
    out |= {line: found for line, found in problems.items() if found and line not in near}
    screened = Screened([r for r in collect.records if r.line not in out], sorted(out.values(), key=lambda x: x.line),
                        scan.rows_valid + len(scan.log.bad_lines), answer_format, collect.records,
                        labels.counts if like else Counter(), like,
                        held_back=[r for r in collect.records if r.line in near and not problems[r.line]])
    screened.labels = labels_of(screened)
    return screened


def readmit_near(screened: Screened, k: int) -> Screened:
    """When --k asks for more records than the distinct ones left, the near duplicates with sound answers come
    back as candidates: the diversity pick then chooses among them, and each one not chosen is named with the kept
    record it is close to. A near duplicate is redundant, not wrong; a template-made set (every record one schema
    and instruction, a slot apart) can have fewer distinct records than a sensible k."""
    if k <= len(screened.candidates) or not screened.held_back:
        return screened
    back = {r.line for r in screened.held_back}
    return replace(screened, candidates=sorted(screened.candidates + screened.held_back, key=lambda r: r.line),
                   left_out=[x for x in screened.left_out if x.line not in back], held_back=[], readmitted=len(back))


def _invalid(scan, out: dict[int, LeftOut]) -> None:
    for p in scan.log.problems:
        if p.severity == "error" and p.line and p.line not in out:
            reason = "empty-answer" if p.code == "empty-target" else "invalid"
            out[p.line] = LeftOut(p.line, reason, f"{p.field}: {p.message}" if p.field else p.message)


def _duplicates(scan, records: list[Checked], out: dict[int, LeftOut]) -> None:
    for rec in records:
        first = scan.seen[_h(rec.shape, rec.prompt, rec.answer)]
        if first != rec.line:
            out.setdefault(rec.line, LeftOut(rec.line, "duplicate", f"exact duplicate of line {first}", first))


def _leakage(scan, records: list[Checked], test_path: Path, opts: AuditOptions, out: dict[int, LeftOut]) -> None:
    """Records the test set holds too: the same record, the same prompt, or a near duplicate (data check's keys)."""
    test = _scan(test_path, opts, split=opts.eval_split)
    if not test.seen:
        raise TunewiseError(f"--test '{test_path}' has no valid records", f"run `tunewise data check {test_path}`")
    test_prompt_line = {ph: entry[0] for ph, entry in test.prompts.items()}
    test_rows, train_rows, _ = dedup.cross_matches(scan.signatures(), test.signatures(), opts.near_threshold)
    near_rows = dict(zip(train_rows.tolist(), test_rows.tolist(), strict=True))  # train row -> test row
    row_of_line = {line: i for i, line in enumerate(scan.lines)}
    for rec in records:
        if rec.line in out:
            continue
        h = _h(rec.shape, rec.prompt, rec.answer)
        ph = _h(rec.shape, rec.prompt.strip()) if rec.prompt.strip() else 0
        row = row_of_line.get(rec.line)
        if h in test.seen:
            where, what = test.seen[h], "the same record as"
        elif ph and ph in test_prompt_line:
            where, what = test_prompt_line[ph], "the same prompt as"
        elif row is not None and row in near_rows:
            where, what = test.lines[near_rows[row]], "a near duplicate of"
        else:
            continue
        out[rec.line] = LeftOut(rec.line, "test-leakage", f"{what} {test_path} line {where}", where)


def _conflicts(scan, records: list[Checked], out: dict[int, LeftOut]) -> None:
    """Within a prompt data check found with different answers, the majority answer stays; with no majority,
    every record of the prompt goes (the data cannot say which answer is right). Every valid record votes, the
    exact duplicates already left out too: three copies of one answer against one of another are a majority
    (counting each answer once made it a tie, and both went)."""
    conflicting = {ph for ph, entry in scan.prompts.items() if entry[2]}
    groups: dict[int, list[Checked]] = {}
    for rec in records:
        ph = _h(rec.shape, rec.prompt.strip()) if rec.prompt.strip() else 0
        if ph in conflicting:
            groups.setdefault(ph, []).append(rec)
    for group in groups.values():
        votes = Counter(r.answer.strip() for r in group)
        ranked = votes.most_common()
        winner = ranked[0][0] if len(ranked) == 1 or ranked[0][1] > ranked[1][1] else None
        for rec in group:
            if rec.answer.strip() == winner or rec.line in out:
                continue
            other = next(r.line for r in group if r.answer.strip() != rec.answer.strip())
            if winner is not None:
                other = next(r.line for r in group if r.answer.strip() == winner)
            why = "the majority answer" if winner is not None else "a different answer (no majority)"
            out[rec.line] = LeftOut(rec.line, "conflict", f"conflict with line {other}: same prompt, {why}", other)


def _label_like(counts: Counter, n: int) -> bool:
    """Most answers come from a few labels (LabelStats' own rule refuses data whose noise adds many rare ones)."""
    if not counts or n < 10:
        return False
    common = [c for c in counts.values() if c >= MIN_LABEL]
    return 2 <= len(common) <= 50 and sum(common) >= 0.8 * n


def _cut_of(answer: str, label_counts: Counter) -> str | None:
    """The label `answer` is the start of, when that label is common and at least 3x as frequent (however often
    the same cut happens)."""
    count = label_counts.get(answer, 0)
    return next((lab for lab, c in label_counts.most_common() if c >= max(MIN_LABEL, 3 * count) and lab != answer
                 and lab.startswith(answer)), None)


def labels_of(screened: Screened) -> set[str]:
    """The classes a subset must keep: answers with MIN_LABEL records or more that are not cut-off labels."""
    counts = screened.label_counts
    return {a for a, c in counts.items() if c >= MIN_LABEL and _cut_of(a, counts) is None}


def _answer_problem(rec: Checked, answer_format: str | None, label_counts: Counter | None) -> LeftOut | None:
    answer = rec.answer.strip()
    if answer_format:
        ok, why = FORMATS[answer_format][1](answer)
        if not ok:
            return LeftOut(rec.line, "malformed-answer", f"answer is not valid {answer_format} ({why}): "
                                                         "truncated or off-task")
    if label_counts:
        count = label_counts.get(answer, 0)
        longer = _cut_of(answer, label_counts)
        if longer:
            return LeftOut(rec.line, "truncated-answer", f"answer '{answer[:40]}' is a cut-off '{longer[:40]}'")
        if count >= MIN_LABEL:
            return None
        return LeftOut(rec.line, "rare-answer", f"answer '{answer[:40]}' is not one of the labels (seen {count} "
                                                f"time(s); labels have >= {MIN_LABEL})")
    return None


_ACT = re.compile(r"^\s*(\w+)\(")
_SLOT = re.compile(r"(\w+)\[")


def coverage_groups(rec: Checked, screened: Screened) -> set[str]:
    """What a subset must keep represented: the record's label, or its act and slot types (mr), or its top-level
    keys (json); nothing for free text."""
    answer = rec.answer.strip()
    if screened.label_like:
        return {f"label {answer}"} if answer in screened.labels else set()
    if screened.answer_format == "mr":
        act = _ACT.match(answer)
        return ({f"act {act.group(1)}"} if act else set()) | {f"slot {s}" for s in _SLOT.findall(answer)}
    if screened.answer_format == "json":
        try:
            value = json.loads(answer)
        except ValueError:
            return set()
        return {f"key {k}" for k in value} if isinstance(value, dict) else set()
    return set()
