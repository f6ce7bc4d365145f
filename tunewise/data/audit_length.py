"""Token lengths with the model's tokenizer, rendered exactly as the trainer renders them (formats.segments).

Records are tokenised in batches (the fast tokenizer's batch path), and per record we keep only its length, so
a 100k-example file costs a few hundred kB. "Truncated" and "no labels left" follow the trainer: with
data.overlong=truncate an example longer than max_seq_len is cut, and one whose trained tokens all fall past
the cut (or at position 0) is dropped.

The tokenizer (transformers, torch) is imported only when a model is named: `data check` without --model never loads
it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from tokenizers import Tokenizer

from tunewise.data.formats import Record, leading_special_ids, segments
from tunewise.data.schema import Checked
from tunewise.defaults import TINY_BASE
from tunewise.hf import context_length
from tunewise.zoo import TINY_DIR

DEFAULT_SAMPLE = 20_000


class FastTokenizer:
    """What the length check needs from a tokenizer folder, straight from tokenizer.json (`tokenizers`), so that
    `data check` does not import torch and transformers; the same Rust tokenizer the transformers wrapper runs."""

    chat_template = None

    def __init__(self, folder: Path):
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        eos = cfg.get("eos_token")
        self.eos_token = eos.get("content") if isinstance(eos, dict) else eos

    def lengths(self, texts: list[str]) -> list[int]:
        return [len(e) for e in self._tok.encode_batch_fast(texts, add_special_tokens=False)]

    def leading_text(self) -> str:
        """The special tokens the tokenizer puts before plain text, as text (see formats.leading_special_ids)."""
        plain, full = (self._tok.encode("a", add_special_tokens=flag).ids for flag in (False, True))
        cut = next((i for i in range(len(full)) if full[i:i + len(plain)] == plain), 0)
        return self._tok.decode(full[:cut], skip_special_tokens=False) if cut else ""


def leading_text(tokenizer) -> str:
    """Plain-text records start with these special tokens (the formats module's rule), counted as one segment."""
    if isinstance(tokenizer, FastTokenizer):
        return tokenizer.leading_text()
    ids = leading_special_ids(tokenizer)
    return tokenizer.decode(ids, skip_special_tokens=False) if ids else ""


def _fast_folder(name: str) -> Path | None:
    """The tokenizer folder when the fast path applies: a local folder with tokenizer.json and no chat template."""
    folder = TINY_DIR if name == TINY_BASE else Path(name).expanduser()
    if not ((folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()):
        return None
    if (folder / "chat_template.jinja").exists():
        return None
    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    return None if cfg.get("chat_template") else folder


def model_context(name: str) -> int | None:
    """How many positions the model was built for (its config.json), or None when it does not say. A local
    folder's config.json is read as JSON, so checking the shipped tiny base or a folder imports no transformers."""
    folder = TINY_DIR if name == TINY_BASE else Path(name).expanduser()
    if (folder / "config.json").is_file():
        return context_length(SimpleNamespace(**json.loads((folder / "config.json").read_text(encoding="utf-8"))))
    from tunewise.models import load_config

    return context_length(load_config(name))


def load_length_tokenizer(name: str):
    folder = _fast_folder(name)
    if folder is not None:
        return FastTokenizer(folder)
    from tunewise.models import load_tokenizer  # imports torch + transformers: hub ids, chat templates

    return load_tokenizer(name)


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    if isinstance(tokenizer, FastTokenizer):
        return tokenizer.lengths(texts)
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


@dataclass
class LengthStats:
    """Exact truncation counts; the length distribution from a uniform sample of `rate` (1.0 = every record).

    A record can only exceed max_seq_len if its byte length does (a token covers at least one byte; +2 per
    segment for a prefix space or a special token), so every record over that bound is tokenised and the
    truncation counts are exact, while the distribution needs only the sample.
    """

    tokenizer: object
    max_seq_len: int
    path: Path
    rate: float = 1.0
    context: int | None = None  # the model's positions: longer examples cannot be trained whole at any max_seq_len
    seed: int = 0
    lengths: list[np.ndarray] = field(default_factory=list)
    records: int = 0
    longest: int = 0  # over every tokenised record: exact whenever some record can exceed max_seq_len
    truncated: int = 0
    no_labels: int = 0
    truncated_lines: list[int] = field(default_factory=list)
    no_label_lines: list[int] = field(default_factory=list)
    over_context: int = 0
    over_context_lines: list[int] = field(default_factory=list)
    _pending: list[tuple[Checked, list, bool]] = field(default_factory=list)
    batch: int = 2048

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lead = leading_text(self.tokenizer)
        # the shortest length whose excess is counted exactly: every record whose byte bound exceeds it is tokenised
        self._limit = min(self.max_seq_len, self.context or self.max_seq_len)

    def add(self, rec: Checked) -> None:
        self.records += 1
        sampled = self.rate >= 1.0 or self._rng.random() < self.rate
        if not sampled and rec.shape != "chat" and self._bound(rec) <= self._limit:
            return  # cannot be truncated and not in the sample: no need to tokenise it
        segs = segments(Record(rec.obj, rec.line), rec.shape, self.tokenizer, self.path)
        if self._lead and not (rec.shape == "chat" and self.tokenizer.chat_template):
            segs = [(self._lead, False), *segs]
        if not sampled and sum(len(t.encode("utf-8", "surrogatepass")) + 2 for t, _ in segs) <= self._limit:
            return
        self._pending.append((rec, segs, sampled))
        if len(self._pending) >= self.batch:
            self.flush()

    def _bound(self, rec: Checked) -> int:
        """Most tokens a prompt/completion or text record can have: its bytes, + EOS, + 2 per segment."""
        eos = len(self.tokenizer.eos_token or "")
        return len(rec.prompt.encode("utf-8", "surrogatepass")) + len(rec.answer.encode("utf-8", "surrogatepass")) \
            + eos + 4

    def flush(self) -> None:
        if not self._pending:
            return
        owners: list[int] = []
        texts: list[str] = []
        trained: list[bool] = []
        for i, (_, segs, _) in enumerate(self._pending):
            for text, is_trained in segs:
                owners.append(i)
                texts.append(text)
                trained.append(is_trained)
        unique = list(dict.fromkeys(texts))  # templated data repeats prompts: tokenise each text once
        by_text = dict(zip(unique, token_lengths(self.tokenizer, unique), strict=True)) if unique else {}
        seg_len = np.fromiter((by_text[t] for t in texts), dtype=np.int64, count=len(texts))
        owner = np.asarray(owners, dtype=np.int64)
        total = np.bincount(owner, weights=seg_len, minlength=len(self._pending)).astype(np.int64)
        in_sample = np.fromiter((p[2] for p in self._pending), dtype=bool, count=len(self._pending))
        self.lengths.append(total[in_sample].astype(np.int32))
        self.longest = max(self.longest, int(total.max()))
        # a record keeps a label iff some trained segment [s, e) overlaps positions [1, min(total, max_seq_len))
        end = np.cumsum(seg_len)
        start = end - seg_len - np.concatenate(([0], np.cumsum(total)[:-1]))[owner]
        stop = start + seg_len
        limit = np.minimum(total, self.max_seq_len)[owner]
        has_label = np.asarray(trained) & (np.maximum(start, 1) < np.minimum(stop, limit))
        kept = np.bincount(owner, weights=has_label, minlength=len(self._pending)) > 0
        for i in np.flatnonzero(total > self.max_seq_len):
            self.truncated += 1
            if len(self.truncated_lines) < 200:
                self.truncated_lines.append(self._pending[i][0].line)
        for i in np.flatnonzero(total > (self.context or np.iinfo(np.int64).max)):
            self.over_context += 1
            if len(self.over_context_lines) < 200:
                self.over_context_lines.append(self._pending[i][0].line)
        for i in np.flatnonzero(~kept):
            self.no_labels += 1
            if len(self.no_label_lines) < 200:
                self.no_label_lines.append(self._pending[i][0].line)
        self._pending = []

    def result(self) -> dict:
        self.flush()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int32)
        if lengths.size == 0:
            return {"examples": self.records, "max_seq_len": self.max_seq_len, "truncated": self.truncated,
                    "no_labels_left": self.no_labels, "context": self.context, "over_context": self.over_context}
        p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
        edges = [0, 32, 64, 128, 256, 512, 1024, 2048, 4096]
        hist = np.histogram(lengths, bins=[*edges, max(int(lengths.max()) + 1, edges[-1] + 1)])[0]
        return {"examples": self.records, "sampled": int(lengths.size), "exact": self.rate >= 1.0,
                "max_seq_len": self.max_seq_len, "min": int(lengths.min()),
                "mean": round(float(lengths.mean()), 1), "p50": int(p50), "p90": int(p90), "p99": int(p99),
                "max": max(self.longest, int(lengths.max())), "total_tokens": int(round(lengths.mean() * self.records)),
                "histogram": {f"<{hi}" if i < len(edges) - 1 else f">={edges[-1]}": int(c)
                              for i, (hi, c) in enumerate(zip([*edges[1:], None], hist, strict=True))},
                "truncated": self.truncated, "truncated_lines": self.truncated_lines[:20],
                "no_labels_left": self.no_labels, "no_labels_lines": self.no_label_lines[:20],
                "context": self.context, "over_context": self.over_context,
                "over_context_lines": self.over_context_lines[:20]}
