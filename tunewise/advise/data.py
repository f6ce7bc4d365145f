"""Dataset facts for advise: record count, shape, duplicates and lengths (light reader; no model needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import TunewiseError


@dataclass
class DataFacts:
    path: str
    records: int
    format: str  # prompt_completion | chat | text | unknown
    duplicates: int
    labels: int | None  # distinct completions when they look like class labels (short, few)
    lengths_chars: list[int]


def _records(path: Path) -> list[dict]:
    """Records in their shape (records.py's one rule); a record of no known format is kept raw (shape unknown)."""
    from tunewise.data.records import RecordError, normalise
    from tunewise.data.sources import iter_source

    out = []
    for row in iter_source(path):
        if row.problem is not None:
            raise TunewiseError(f"{path}:{row.line}: {row.problem}", f"run `tunewise data check {path}`")
        if not isinstance(row.obj, dict):
            continue
        try:
            out.append(normalise(row.obj)[2])
        except RecordError:
            out.append(row.obj)
    return out


def _text(rec: dict) -> str:
    if "messages" in rec:
        return "".join(str(m.get("content", "")) for m in rec["messages"] if isinstance(m, dict))
    if "prompt" in rec or "completion" in rec:
        return f"{rec.get('prompt', '')}{rec.get('completion', '')}"
    return str(rec.get("text", ""))


def read(path: str) -> DataFacts:
    from tunewise.data.schema import shape_of

    p = Path(path).expanduser()
    recs = _records(p)
    fmt = (shape_of(recs[0]) if recs else None) or "unknown"
    texts = [_text(r) for r in recs]
    completions = {str(r.get("completion", "")).strip() for r in recs} if fmt == "prompt_completion" else set()
    looks_like_labels = fmt == "prompt_completion" and 1 < len(completions) <= 50 and len(recs) >= 2 * len(
        completions) and all(len(c) <= 40 for c in completions)
    return DataFacts(str(p), len(recs), fmt, len(texts) - len(set(texts)),
                     len(completions) if looks_like_labels else None, [len(t) for t in texts])


def size_advice(n: int) -> str:
    """Records against the seed's '1,000 curated examples can beat 50,000 noisy ones' (LIMA)."""
    if n < 100:
        return (f"{n:,} examples is very few: aim for about 1,000 curated ones (LIMA); with this little data, "
                "watch the overfitting guard closely.")
    if n < 1000:
        return (f"{n:,} examples: below the ~1,000 curated examples LIMA showed can be enough; adding well-chosen "
                "examples will help more than anything else.")
    if n <= 50_000:
        return (f"{n:,} examples: enough. Quality beats quantity from here: 1,000 curated examples can beat 50,000 "
                "noisy ones, and LoRA's limited capacity makes garbage-in hit faster than with full fine-tuning.")
    return (f"{n:,} examples: large. 1,000 curated examples can beat 50,000 noisy ones: deduplicate and filter "
            "before adding epochs; one epoch is usually enough at this size.")
