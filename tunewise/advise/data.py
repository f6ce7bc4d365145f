"""Dataset facts for advise: record count, shape, duplicates and lengths -- in tokens with the model's tokenizer
(as the trainer renders and counts them), in characters when the model has none here (a preset is a config)."""

from __future__ import annotations

import math
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
    tokens: dict | None = None  # {"tokenizer", "p99", "max", ...} from audit_length.LengthStats, or None
    tokens_note: str | None = None  # why lengths are in characters (no tokenizer could be loaded)


def token_stats(path: Path, tokenizer_name: str) -> dict:
    """p50 / p99 / max tokens of every record as the trainer renders it (audit_length owns that rule)."""
    from tunewise.data.audit_length import LengthStats, load_length_tokenizer
    from tunewise.data.schema import ProblemLog, iter_checked

    stats = LengthStats(load_length_tokenizer(tokenizer_name), 1, path)  # max_seq_len 1: only lengths matter
    for rec in iter_checked(path, ProblemLog(cap=0)):
        stats.add(rec)
    r = stats.result()
    return {"tokenizer": tokenizer_name, "p50": r.get("p50"), "p99": r.get("p99"), "max": r.get("max"),
            "examples": r["examples"]}


def sequence_length(data: DataFacts, max_pos: int) -> tuple[int, str]:
    """The sequence length to plan for, and why: the longest example in tokens (so nothing is cut), up to the
    model's context; without a tokenizer, the 99th-percentile example at ~3 characters per token."""
    t = data.tokens
    if t and t.get("max"):
        seq = min(max_pos, max(32, int(t["max"])))
        capped = f", capped at the model's context of {max_pos}: longer examples are truncated" \
            if t["max"] > max_pos else ""
        return seq, (f"sequence length {seq}: the longest example is {t['max']} tokens with {t['tokenizer']}'s "
                     f"tokenizer (p99 {t['p99']}){capped}")
    longest = sorted(data.lengths_chars)[int(0.99 * (len(data.lengths_chars) - 1))]
    tokens = math.ceil(longest / 3) + 1  # ~3 characters per token is conservative for BPE tokenizers (+ EOS)
    seq = min(max_pos, max(32, 2 ** math.ceil(math.log2(tokens))))
    why = f"; {data.tokens_note}" if data.tokens_note else ""
    return seq, (f"sequence length {seq}: the 99th-percentile example is {longest} characters "
                 f"(~{tokens} tokens at ~3 characters per token{why})")


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


def read(path: str, tokenizer: str | None = None) -> DataFacts:
    """The facts of a training file; `tokenizer` (the model advised for) counts its lengths in tokens."""
    from tunewise.data.schema import shape_of

    p = Path(path).expanduser()
    recs = _records(p)
    fmt = (shape_of(recs[0]) if recs else None) or "unknown"
    texts = [_text(r) for r in recs]
    completions = {str(r.get("completion", "")).strip() for r in recs} if fmt == "prompt_completion" else set()
    looks_like_labels = fmt == "prompt_completion" and 1 < len(completions) <= 50 and len(recs) >= 2 * len(
        completions) and all(len(c) <= 40 for c in completions)
    facts = DataFacts(str(p), len(recs), fmt, len(texts) - len(set(texts)),
                      len(completions) if looks_like_labels else None, [len(t) for t in texts])
    if tokenizer and recs:
        try:
            facts.tokens = token_stats(p, tokenizer)
        except Exception as e:  # no tokenizer here (a preset, an unreachable hub id): characters, and say why
            message = e.message if isinstance(e, TunewiseError) else f"{type(e).__name__}: {e}"
            facts.tokens_note = f"no tokenizer of '{tokenizer}' here ({message.splitlines()[0][:120]})"
    return facts


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
