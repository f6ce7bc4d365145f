"""`tunewise data check`: what is wrong with a training file, before any training.

One streaming pass over the training file feeds every check (schema, exact duplicates and conflicts, MinHash
signatures, token lengths, labels, structured outputs, skills); near duplicates and eval leakage are computed
from the stored signatures at the end. Per record only hashes, a signature and a length are kept, never the
text, so memory grows by a few hundred bytes per record. The verdict uses the seed's terms: quality beats
quantity, "curate before you scale".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunewise.data import dedup
from tunewise.data.audit_content import FormatStats, LabelStats, SkillStats
from tunewise.data.audit_length import LengthStats, load_length_tokenizer, model_context
from tunewise.data.audit_readers import MAX_LINE_BYTES, detect_kind
from tunewise.data.audit_verdict import findings, verdict
from tunewise.data.schema import Checked, Problem, ProblemLog, iter_checked
from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_bytes


@dataclass
class AuditOptions:
    eval_path: str | None = None
    model: str | None = "tiny"  # None: skip token lengths
    max_seq_len: int = 256  # the trainer's limit (data.max_seq_len); lengths are also checked against the context
    preserve: list[str] = field(default_factory=list)
    output_format: str = "auto"  # auto | json | mr | sql | none
    near_threshold: float = 0.8
    max_problems: int = 1000
    max_line_bytes: int = MAX_LINE_BYTES
    chunk: int = 4096
    length_sample: int = 20_000  # records whose lengths form the distribution (0 = all); truncation is exact
    fmt: str = "auto"  # data.format: auto, alpaca, sharegpt, messages, prompt_completion, text
    split: str = "train"  # of a dataset id or a DatasetDict folder
    eval_split: str = "validation"
    columns: dict[str, str] | None = None  # data.columns: {our field: the dataset's column}


def _h(*parts: str) -> int:
    """64-bit key of strings. Python's tuple hash (SipHash) is salted per process, which is fine: keys are only
    compared within one run; a collision among 10^6 records has probability ~3e-8."""
    return hash(parts) or 1  # 0 means "no prompt"


@dataclass
class _Scan:
    """What one pass over a file keeps: per unique record its line, hashes and MinHash signature."""

    log: ProblemLog
    rows_valid: int = 0
    shapes: dict = field(default_factory=dict)
    seen: dict = field(default_factory=dict)  # record hash -> first line
    exact_dups: int = 0
    exact_examples: list = field(default_factory=list)
    prompts: dict = field(default_factory=dict)  # prompt hash -> [first line, first answer hash, conflicting?]
    conflict_prompts: int = 0
    conflict_records: int = 0
    conflict_examples: list = field(default_factory=list)
    lines: list = field(default_factory=list)  # line of each unique record (signature row)
    prompt_hashes: list = field(default_factory=list)
    sigs: list = field(default_factory=list)
    _texts: list = field(default_factory=list)

    def add(self, rec: Checked, chunk: int) -> bool:
        """Account one valid record; False when it is an exact duplicate of an earlier one."""
        self.rows_valid += 1
        self.shapes[rec.shape] = self.shapes.get(rec.shape, 0) + 1
        rh = _h(rec.shape, rec.prompt, rec.answer)
        first = self.seen.setdefault(rh, rec.line)
        if first != rec.line:
            self.exact_dups += 1
            if len(self.exact_examples) < 20:
                self.exact_examples.append([rec.line, first])
            return False
        ph = _h(rec.shape, rec.prompt.strip()) if rec.prompt.strip() else 0
        if ph:
            self._conflict(ph, rec, _h(rec.answer.strip()))
        self.lines.append(rec.line)
        self.prompt_hashes.append(ph)
        self._texts.append(rec.text)
        if len(self._texts) >= chunk:
            self.flush()
        return True

    def _conflict(self, ph: int, rec: Checked, ah: int) -> None:
        entry = self.prompts.get(ph)
        if entry is None:
            self.prompts[ph] = [rec.line, ah, False]
            return
        if entry[1] == ah:
            return
        if not entry[2]:
            entry[2] = True
            self.conflict_prompts += 1
            self.conflict_records += 1  # the first record of the group
        self.conflict_records += 1
        if len(self.conflict_examples) < 20:
            self.conflict_examples.append([rec.line, entry[0]])

    def flush(self) -> None:
        if self._texts:
            self.sigs.append(dedup.signatures(self._texts))
            self._texts = []

    def signatures(self) -> np.ndarray:
        self.flush()
        return np.concatenate(self.sigs) if self.sigs else np.zeros((0, dedup.NUM_PERM), np.uint32)


def _scan(path: Path, opts: AuditOptions, extra: list | None = None, label: str | None = None,
          split: str | None = None) -> _Scan:
    scan = _Scan(ProblemLog(cap=opts.max_problems))
    for rec in iter_checked(path, scan.log, opts.max_line_bytes, label, opts.fmt, split or opts.split,
                            opts.columns):
        scan.add(rec, opts.chunk)
        for acc in extra or []:
            acc.add(rec)
    scan.flush()
    return scan


def _near(scan: _Scan, threshold: float) -> dict:
    sig = scan.signatures()
    n = sig.shape[0]
    a, b, est = dedup.near_duplicates(sig, threshold)
    labels = dedup.cluster_labels(n, a, b) if n else np.zeros(0, np.int64)
    sizes = np.bincount(labels) if n else np.zeros(0, np.int64)
    lines = np.asarray(scan.lines, dtype=np.int64)
    # within each cluster the first record (smallest line) is kept; the others are near duplicates
    first = np.full(sizes.size, np.iinfo(np.int64).max)
    np.minimum.at(first, labels, np.arange(n))
    redundant = np.flatnonzero(np.arange(n) != first[labels]) if n else np.zeros(0, np.int64)
    order = np.argsort(-est, kind="stable")[:20]
    return {"threshold": threshold, "near_duplicates": int(redundant.size), "clusters": int((sizes > 1).sum()),
            "largest_cluster": int(sizes.max()) if n else 0,
            "examples": [[int(lines[b[i]]), int(lines[a[i]]), round(float(est[i]), 3)] for i in order],
            "_redundant_lines": set(lines[redundant].tolist()),
            # each near duplicate -> the kept record of its cluster (data select says which line it repeats)
            "_kept_line": dict(zip(lines[redundant].tolist(), lines[first[labels[redundant]]].tolist(), strict=True))}


def _leakage(train: _Scan, ev: _Scan, threshold: float) -> dict:
    """Eval records found in training, as [eval line, train line] pairs; `_leaked_lines` are the training records
    `--fix` drops (the same record, or the same prompt with any answer), `_near_leaked_lines` with --drop-near."""
    exact = sorted([line, train.seen[h]] for h, line in ev.seen.items() if h in train.seen)
    ev_prompts = {h: line for h, line in zip(ev.prompt_hashes, ev.lines, strict=True) if h}
    prompt_pairs = sorted([ev_prompts[h], line] for h, line in zip(train.prompt_hashes, train.lines, strict=True)
                          if h and h in ev_prompts)
    train_prompts = set(train.prompt_hashes)
    same_prompt = sum(1 for h in ev.prompt_hashes if h and h in train_prompts)
    e_idx, t_idx, est = dedup.cross_matches(train.signatures(), ev.signatures(), threshold)
    ev_lines, tr_lines = np.asarray(ev.lines), np.asarray(train.lines)
    return {"eval_records": ev.rows_valid, "eval_unique": len(ev.lines), "exact": len(exact),
            "exact_lines": [e for e, _ in exact[:20]], "exact_examples": exact[:20], "same_prompt": same_prompt,
            "same_prompt_examples": prompt_pairs[:20], "near": int(e_idx.size),
            "near_share": round(e_idx.size / max(len(ev.lines), 1), 4),
            "near_examples": [[int(ev_lines[e]), int(tr_lines[t]), round(float(j), 3)]
                              for e, t, j in list(zip(e_idx, t_idx, est, strict=True))[:20]],
            "eval_schema_errors": ev.log.errors,
            "_leaked_lines": {t for _, t in exact} | {t for _, t in prompt_pairs},
            "_near_leaked_lines": set(tr_lines[t_idx].tolist()) if t_idx.size else set()}


def _length_stats(path: Path, opts: AuditOptions):
    if not opts.model:
        return None
    try:
        tokenizer = load_length_tokenizer(opts.model)
        context = model_context(opts.model)
    except Exception as e:  # a missing or broken tokenizer must not stop the other checks; it is reported
        message = e.message if isinstance(e, TunewiseError) else f"{type(e).__name__}: {str(e).splitlines()[0]}"
        return f"could not load the tokenizer of '{opts.model}' ({message[:200]})"
    rate = 1.0
    if opts.length_sample and path.is_file() and detect_kind(path) == "jsonl":
        rate = min(1.0, opts.length_sample / max(_count_lines(path), 1))
    return LengthStats(tokenizer, opts.max_seq_len, path, rate=rate, context=context)


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n + 1


def audit(path: str | Path, opts: AuditOptions | None = None) -> dict:
    """Run every check on a training file; returns the report (a JSON-ready dict, see `findings` and `verdict`)."""
    opts = opts or AuditOptions()
    path = Path(path)
    if opts.output_format not in ("auto", "none", "json", "mr", "sql"):
        raise TunewiseError(f"--output-format '{opts.output_format}' is not known", "use auto, json, mr, sql or none")
    kind = detect_kind(path) if path.is_file() else None
    labels, formats, skills = LabelStats(), FormatStats(opts.output_format), SkillStats(opts.preserve)
    lengths = _length_stats(path, opts)
    length_skipped = lengths if isinstance(lengths, str) else None
    lengths = None if length_skipped else lengths
    train = _scan(path, opts, [labels, formats, skills] + ([lengths] if lengths else []))
    report: dict = {
        "file": str(path), "kind": kind,
        "records": {"valid": train.rows_valid, "invalid": len(train.log.bad_lines), "shapes": train.shapes},
        "schema": {"errors": train.log.errors, "warnings": train.log.warnings,
                   "by_code": dict(train.log.by_code), "omitted": train.log.omitted},
    }
    near = _near(train, opts.near_threshold)
    report["duplicates"] = {
        "exact": train.exact_dups, "exact_examples": train.exact_examples,
        "near": {k: v for k, v in near.items() if not k.startswith("_")},
        "conflicts": {"prompts": train.conflict_prompts, "records": train.conflict_records,
                      "examples": train.conflict_examples},
    }
    report["length"] = ({**lengths.result(), "model": opts.model} if lengths else
                        {"skipped": length_skipped} if length_skipped else None)
    report["labels"] = labels.result()
    report["structured"] = formats.result()
    report["skills"] = skills.result() if opts.preserve else None
    problems = list(train.log.problems)
    if opts.eval_path:
        ev = _scan(Path(opts.eval_path), opts, split=opts.eval_split)
        leak = _leakage(train, ev, opts.near_threshold)
        report["_leaked_lines"] = leak.pop("_leaked_lines")
        report["_near_leaked_lines"] = leak.pop("_near_leaked_lines")
        report["leakage"] = leak | {"file": str(opts.eval_path)}
        problems += ev.log.problems[: max(0, opts.max_problems - len(problems))]
    else:
        report["leakage"], report["_leaked_lines"], report["_near_leaked_lines"] = None, set(), set()
    report["findings"] = findings(report, opts)
    report["problems"] = [p.as_dict() for p in problems]
    report["verdict"] = verdict(report)
    report["exit_code"] = exit_code(report)
    report["_near_redundant_lines"] = near["_redundant_lines"]
    return report


def exit_code(report: dict) -> int:
    """2 when anything is an error (schema or dataset level), 1 for warnings only, else 0."""
    severities = {f["severity"] for f in report["findings"]} | {p["severity"] for p in report["problems"]}
    if report["schema"]["errors"] or "error" in severities:
        return 2
    return 1 if report["schema"]["warnings"] or "warning" in severities else 0


def write_fixed(path: str | Path, out: str | Path, drop_lines: set[int] | None = None,
                max_line_bytes: int = MAX_LINE_BYTES, fmt: str = "auto", split: str = "train",
                leaked_lines: set[int] | None = None, columns: dict[str, str] | None = None) -> dict:
    """A cleaned JSONL copy: without unparseable / invalid / empty records, exact duplicates, `drop_lines` (near
    duplicates) and `leaked_lines` (training records of the eval set: the audit's `_leaked_lines`).

    The input is only read; the output is written atomically (a crash leaves no half-written file).
    """
    path, out = Path(path), Path(out)
    if out.exists() and out.resolve() == path.resolve():
        raise TunewiseError(f"--fix would overwrite the input '{path}'", "write the cleaned copy to another file")
    log = ProblemLog(cap=0)
    seen: set[int] = set()
    parts: list[bytes] = []
    dropped_dup = dropped_extra = dropped_leaked = 0
    for rec in iter_checked(path, log, max_line_bytes, fmt=fmt, split=split, columns=columns):
        h = _h(rec.shape, rec.prompt, rec.answer)
        if h in seen:
            dropped_dup += 1
            continue
        seen.add(h)
        if leaked_lines and rec.line in leaked_lines:
            dropped_leaked += 1
            continue
        if drop_lines and rec.line in drop_lines:
            dropped_extra += 1
            continue
        parts.append(json.dumps(rec.original, ensure_ascii=False).encode("utf-8") + b"\n")
    atomic_write_bytes(out, b"".join(parts))
    return {"out": str(out), "kept": len(parts), "dropped_invalid": len(log.bad_lines),
            "dropped_exact_duplicates": dropped_dup, "dropped_near_duplicates": dropped_extra,
            "dropped_leaked": dropped_leaked}


def problem_lines(report: dict) -> list[str]:
    return [str(Problem(**p)) for p in report["problems"]]
