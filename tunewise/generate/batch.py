"""The running batch: rows decoded together one token per step over one KV cache, each row stopping on its own
(EOS, a stop string, max_new_tokens) and leaving at once, new rows prefilled and merged in between two steps.

Rows are left-padded; each row's positions count from its own first token, so a row's numbers do not depend on
what else shares its batch (up to float rounding of the padded matmuls). A base whose cache cannot be merged
(sliding-window layers, see kv.check_cache) runs as fixed batches instead: rows join only an empty batch, and a
finished row rides along, fed padding, until the last one ends (what `model.generate` does).

`AdapterRouter` is the forward in which row i goes through its own adapter: per-row LoRA (rowlora.py) when it
covers every adapter of the batch, else PEFT's mixed-adapter forward.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from tunewise.generate import kv
from tunewise.generate.rowlora import RowLoRA, covers
from tunewise.generate.rows import BASE_ROW, GenJob, Row, left_pad
from tunewise.generate.sampling import choose_where

log = logging.getLogger("tunewise.generate")
# Rows per prefill forward: each is padded to its longest prompt, so rows admitted in length order prefill in
# chunks of similar lengths (one chunk of 128 padded structured prompts a third longer than they are); 32 rows of
# ~30 tokens still make one large matmul.
PREFILL_ROWS = 32
Forward = Callable[..., object]  # forward(adapters: list[str | None], **model inputs) -> model output
STAT_KEYS = ("batches", "rows", "mixed_batches", "max_rows", "steps", "cancelled", "row_lora_forwards",
             "peft_mixed_forwards", "shared_prefix_rows", "prefill_tokens", "row_steps", "prefill_s", "decode_s")


def mergeable_cache(model) -> bool:
    """Can rows join and leave this model's KV cache (plain full-attention layers only)?"""
    try:
        kv.check_cache(DynamicCache(config=model.config))
    except Exception:  # sliding windows, or a config DynamicCache cannot read: fixed batches are always right
        return False
    return True


class AdapterRouter:
    """One forward in which row i goes through adapters[i] (None = the base)."""

    def __init__(self, model, stats: dict, rowlora: RowLoRA | None = None):
        self.model, self.stats = model, stats
        self.rowlora = rowlora or RowLoRA(model)
        self.covered: dict[str, bool] = {}  # loaded adapter -> applied per row by rowlora
        self._version, self._stacked = 0, -1

    def added(self, name: str) -> None:
        self.covered[name] = covers(self.model, name)
        self._version += 1

    def removed(self, name: str) -> None:
        self.covered.pop(name, None)
        self._version += 1

    def __call__(self, adapters: list[str | None], **inputs):
        used = {a for a in adapters if a is not None}
        if all(self.covered.get(a, False) for a in used):
            if self._stacked != self._version:
                self.rowlora.rebuild([a for a, ok in self.covered.items() if ok])
                self._stacked = self._version
            self.stats["row_lora_forwards"] += bool(used)
            with self.rowlora.routing(adapters):
                return self.model(**inputs)
        self.stats["peft_mixed_forwards"] += 1
        return self.model(**inputs, adapter_names=[a if a is not None else BASE_ROW for a in adapters])


@dataclass(frozen=True)
class SharedPrefix:
    """Leading prompt tokens many rows share (the chat template, the task's instruction), run once through
    `adapter`: their KV cache, one row, which each prefill that fits repeats instead of recomputing."""

    adapter: str | None
    ids: tuple[int, ...]
    cache: object  # the model's cache of `ids`, batch 1

    def fits(self, row: Row) -> bool:
        p = row.job.prompt_ids
        return row.job.adapter == self.adapter and len(p) > len(self.ids) and tuple(p[:len(self.ids)]) == self.ids


class RunningBatch:
    """The rows being decoded, their KV cache and attention mask (B, T); `forward` runs the model per row."""

    def __init__(self, model, tokenizer, forward: Forward, stats: dict | None = None, merge: bool | None = None):
        self.model, self.tokenizer, self.forward = model, tokenizer, forward
        self.stats = stats if stats is not None else {}  # the caller's dict, counted into
        for k in STAT_KEYS:
            self.stats.setdefault(k, 0)
        eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))
        self.device = next(model.parameters()).device
        self.merging = mergeable_cache(model) if merge is None else merge
        self.rows: list[Row] = []
        self.kv = None
        self.mask: torch.Tensor | None = None
        self.prefixes: list[SharedPrefix] = []

    @property
    def open(self) -> bool:
        """May rows join now? Always while merging; a fixed batch only once it is empty."""
        return self.merging or not self.rows

    def clear(self) -> None:
        self.rows, self.kv, self.mask = [], None, None

    def fail(self, e: BaseException) -> None:
        """Every running row gets `e`; the batch is empty after."""
        for r in self.rows:
            if not r.job.future.done():
                r.job.future.set_exception(e)
        self.clear()

    def share_prefix(self, adapter: str | None, ids: list[int]) -> None:
        """Compute `ids` once through `adapter`; later prefills of rows whose prompts start with them (and go
        on) start from that cache. Only where rows can join a running batch (a fixed batch joins once)."""
        if not self.merging or not ids:
            return
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self.forward([adapter], input_ids=x, use_cache=True, logits_to_keep=1)
        kv.check_cache(out.past_key_values)
        self.prefixes.append(SharedPrefix(adapter, tuple(ids), out.past_key_values))

    def prefix_of(self, row: Row) -> SharedPrefix | None:
        return next((p for p in self.prefixes if p.fits(row)), None)

    def prefill(self, rows: list[Row], prefix: SharedPrefix | None = None):
        """The prompts' forward (may raise: the caller fails these rows); join() takes its output. With a
        `prefix` every row's prompt starts with (SharedPrefix.fits), only the rest of each prompt is computed:
        the mask's columns are the prefix, then each row's left-padded rest."""
        skip = len(prefix.ids) if prefix is not None else 0
        self.stats["shared_prefix_rows"] += len(rows) if skip else 0
        ids, mask = left_pad([r.job.prompt_ids[skip:] for r in rows], self.pad_id)
        if prefix is not None:
            mask = torch.cat([torch.ones((len(rows), skip), dtype=mask.dtype), mask], dim=1)
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, skip:]  # (B, T): each row counts its own tokens
        cache = {}  # fixed batches: the model's own cache
        if prefix is not None:
            cache = {"cache": kv.repeat_row(prefix.cache, len(rows), kv.new_cache(self.model.config))}
        elif self.merging:
            cache = {"cache": kv.new_cache(self.model.config)}
        t0 = time.perf_counter()
        out = self.forward([r.job.adapter for r in rows], input_ids=ids, attention_mask=mask,
                           position_ids=positions, use_cache=True, logits_to_keep=1, **cache)
        self.stats["prefill_s"] += time.perf_counter() - t0
        self.stats["prefill_tokens"] += ids.numel()  # padding included: what the forward computed
        if self.merging:
            kv.check_cache(out.past_key_values)
        return out, mask

    def join(self, rows: list[Row], prefilled) -> None:
        """Add prefilled rows to the batch and take each one's first token."""
        out, mask = prefilled
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        if self.rows:
            self.mask = kv.merge(self.kv, self.mask, out.past_key_values, mask)
        else:
            self.kv, self.mask = out.past_key_values, mask
        self.rows += rows
        self.take_tokens(rows, out.logits[:, -1, :])

    def admit(self, jobs: list[GenJob]) -> None:
        """Prefill `jobs` and join them (errors propagate: for callers that own every job, not a server)."""
        rows = [Row(j) for j in jobs]
        for j in jobs:
            j.future.set_running_or_notify_cancel()
        groups: dict[int, list[Row]] = {}  # by the shared prefix each row starts with (-1: none)
        for r in rows:
            p = self.prefix_of(r)
            groups.setdefault(-1 if p is None else self.prefixes.index(p), []).append(r)
        for k, group in groups.items():
            step = PREFILL_ROWS if self.merging else len(group)  # a fixed batch is joined once
            for i in range(0, len(group), step):
                chunk = group[i:i + step]
                self.join(chunk, self.prefill(chunk, None if k < 0 else self.prefixes[k]))

    def step(self) -> None:
        """Decode one token for every running row (a finished row of a fixed batch is fed padding)."""
        rows = self.rows
        last = [r.last if r.finish is None else self.pad_id for r in rows]
        ids = torch.tensor([[t] for t in last], dtype=torch.long, device=self.device)  # (B, 1)
        positions = self.mask.sum(dim=1, keepdim=True)  # (B, 1): the new token's position in its own row
        mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)  # (B, T + 1)
        t0 = time.perf_counter()
        out = self.forward([r.job.adapter for r in rows], input_ids=ids, attention_mask=mask,
                           position_ids=positions, cache=self.kv, use_cache=True)
        self.stats["decode_s"] += time.perf_counter() - t0
        self.kv, self.mask = out.past_key_values, mask
        self.stats["steps"] += 1
        self.stats["row_steps"] += len(rows)
        self.stats["max_rows"] = max(self.stats["max_rows"], len(rows))
        self.stats["mixed_batches"] += len({r.name for r in rows}) > 1
        self.take_tokens(rows, out.logits[:, -1, :])

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def take_tokens(self, rows: list[Row], logits: torch.Tensor) -> None:
        """Choose each row's next token, stream what is new, and retire finished or abandoned rows."""
        picks = choose_where(logits, [r.job.sampling for r in rows], [r.gen for r in rows])
        for r, c in zip(rows, picks, strict=True):
            if r.finish is not None:  # a fixed batch's finished row
                continue
            r.add(c, self.eos_ids, self._decode)
            if r.job.on_delta is not None:
                d = r.delta()
                if d is not None:
                    try:
                        r.job.on_delta(d)
                    except Exception:  # the request's event loop is gone: treat it as a disconnect
                        r.job.cancelled.set()
        self.retire()

    def _resolve(self, r: Row) -> bool:
        """Give a finished or abandoned row its result or error; True once it has one."""
        if not r.resolved and r.job.cancelled.is_set():
            self.stats["cancelled"] += 1
            if not r.job.future.done():
                r.job.future.set_exception(RuntimeError("cancelled: the client went away"))
            r.resolved, r.finish = True, r.finish or "cancelled"
        elif not r.resolved and r.finish is not None:
            r.job.future.set_result(r.result())
            r.resolved = True
        return r.resolved

    def retire(self) -> None:
        keep = [i for i, r in enumerate(self.rows) if not self._resolve(r)]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.clear()
        elif self.merging:
            self.mask = kv.trim(self.kv, kv.select_rows(self.kv, self.mask, keep))
            self.rows = [self.rows[i] for i in keep]
