"""Token lengths with the model's tokenizer, rendered exactly as the trainer renders them (formats.segments).

Records are tokenised in batches (the fast tokenizer's batch path), and per record we keep only its length, so
a 100k-example file costs a few hundred kB. "Truncated" and "no labels left" follow the trainer: with
data.overlong=truncate an example longer than max_seq_len is cut, and one whose trained tokens all fall past
the cut (or at position 0) is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunewise.data.schema import Checked


@dataclass
class LengthStats:
    tokenizer: object
    max_seq_len: int
    path: Path
    lengths: list[np.ndarray] = field(default_factory=list)
    truncated: int = 0
    no_labels: int = 0
    truncated_lines: list[int] = field(default_factory=list)
    no_label_lines: list[int] = field(default_factory=list)
    _pending: list[Checked] = field(default_factory=list)
    batch: int = 2048

    def add(self, rec: Checked) -> None:
        self._pending.append(rec)
        if len(self._pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        from tunewise.data.formats import Record, segments

        if not self._pending:
            return
        owners: list[int] = []
        texts: list[str] = []
        trained: list[bool] = []
        for i, rec in enumerate(self._pending):
            for text, is_trained in segments(Record(rec.obj, rec.line), rec.shape, self.tokenizer, self.path):
                owners.append(i)
                texts.append(text)
                trained.append(is_trained)
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        seg_len = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        owner = np.asarray(owners, dtype=np.int64)
        total = np.bincount(owner, weights=seg_len, minlength=len(self._pending)).astype(np.int64)
        self.lengths.append(total.astype(np.int32))
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
                self.truncated_lines.append(self._pending[i].line)
        for i in np.flatnonzero(~kept):
            self.no_labels += 1
            if len(self.no_label_lines) < 200:
                self.no_label_lines.append(self._pending[i].line)
        self._pending = []

    def result(self) -> dict:
        self.flush()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int32)
        if lengths.size == 0:
            return {"examples": 0, "max_seq_len": self.max_seq_len}
        p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
        edges = [0, 32, 64, 128, 256, 512, 1024, 2048, 4096]
        hist = np.histogram(lengths, bins=[*edges, max(int(lengths.max()) + 1, edges[-1] + 1)])[0]
        return {"examples": int(lengths.size), "max_seq_len": self.max_seq_len, "min": int(lengths.min()),
                "mean": round(float(lengths.mean()), 1), "p50": int(p50), "p90": int(p90), "p99": int(p99),
                "max": int(lengths.max()), "total_tokens": int(lengths.sum()),
                "histogram": {f"<{hi}" if i < len(edges) - 1 else f">={edges[-1]}": int(c)
                              for i, (hi, c) in enumerate(zip([*edges[1:], None], hist, strict=True))},
                "truncated": self.truncated, "truncated_lines": self.truncated_lines[:20],
                "no_labels_left": self.no_labels, "no_labels_lines": self.no_label_lines[:20]}
