"""The running batch's KV cache: rows leave (select), rows join (merge), and columns no row needs go (trim).

Rows are left-padded: every row's tokens end at the last column, its padding columns are 0 in the attention mask
(B, T). Each cache layer holds keys / values (B, heads, T, head_dim); only plain `DynamicLayer`s are handled
(no sliding windows), which `check_cache` says up front.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

SLACK = 64  # spare columns per buffer: the cache is copied once per SLACK decode steps, not at every step


class SlackLayer(DynamicLayer):
    """A DynamicLayer whose keys / values are views of buffers with spare columns, so a decode step writes its
    token in place where DynamicLayer copies the whole cache (torch.cat: 18-33% of a smollm2 decode step at
    16-64 rows). Dropping leading columns (trim) moves the view's start, rows leaving or joining copy the cache
    once into a new buffer (keep_rows, join_rows); keys / values replaced by anything else are buffered again
    at the next update."""

    _kbuf: torch.Tensor | None = None
    _vbuf: torch.Tensor | None = None

    def _start(self, rows: int) -> int | None:
        """Where keys begin in the buffer (in columns), or None if keys are not a view of it."""
        k = self._kbuf
        if k is None or self.keys.dim() != 4 or self.keys.shape[0] != rows or self.keys.stride() != k.stride():
            return None
        offset, rest = divmod(self.keys.data_ptr() - k.data_ptr(), k.stride(2) * k.element_size())
        return offset if rest == 0 and 0 <= offset <= k.shape[2] - self.keys.shape[2] else None

    def _adopt(self, kbuf: torch.Tensor, vbuf: torch.Tensor, start: int, n: int) -> None:
        self._kbuf, self._vbuf = kbuf, vbuf
        self.keys, self.values = kbuf[:, :, start:start + n], vbuf[:, :, start:start + n]

    def _rebuffer(self, like: torch.Tensor, width: int) -> None:
        b, h, _, d = like.shape
        kbuf, vbuf = like.new_empty((b, h, width, d)), like.new_empty((b, h, width, d))
        n = self.keys.shape[-2] if self.keys.dim() == 4 else 0
        if n:
            kbuf[:, :, :n], vbuf[:, :, :n] = self.keys, self.values
        self._adopt(kbuf, vbuf, 0, n)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self.keys.shape[-2] if self.keys.dim() == 4 else 0
        add = key_states.shape[-2]
        start = self._start(key_states.shape[0])
        if start is None or start + n + add > self._kbuf.shape[2]:
            self._rebuffer(key_states, n + add + SLACK)
            start = 0
        self._kbuf[:, :, start + n:start + n + add] = key_states
        self._vbuf[:, :, start + n:start + n + add] = value_states
        self._adopt(self._kbuf, self._vbuf, start, n + add)
        return self.keys, self.values

    def keep_rows(self, idx: torch.Tensor) -> None:
        """Only rows `idx`: one copy, of the used columns and the spare ones after them."""
        start = self._start(self.keys.shape[0])
        if start is None:
            self.keys, self.values = self.keys.index_select(0, idx), self.values.index_select(0, idx)
            return
        n = self.keys.shape[2]
        self._adopt(self._kbuf[:, :, start:].index_select(0, idx), self._vbuf[:, :, start:].index_select(0, idx),
                    0, n)

    def join_rows(self, other_keys: torch.Tensor, other_values: torch.Tensor, pad_a: int, pad_b: int) -> None:
        """Append rows (B', heads, T', head_dim) below these, each side left-padded by zeros (pad_a, pad_b
        columns) to the common width: one copy into a new buffer with spare columns."""
        (a, h, t_a, d), b = self.keys.shape, other_keys.shape[0]
        width = t_a + pad_a
        bufs = []
        for mine, theirs in ((self.keys, other_keys), (self.values, other_values)):
            buf = mine.new_empty((a + b, h, width + SLACK, d))
            buf[:a, :, :pad_a] = 0  # padding columns are masked, but must hold finite numbers (0 x nan is nan)
            buf[a:, :, :pad_b] = 0
            buf[:a, :, pad_a:width] = mine
            buf[a:, :, pad_b:width] = theirs
            bufs.append(buf)
        self._adopt(bufs[0], bufs[1], 0, width)


def new_cache(config) -> DynamicCache:
    """An empty cache for `config`'s model whose layers grow in place (SlackLayer)."""
    cache = DynamicCache(config=config)
    check_cache(cache)
    cache.layers = [SlackLayer() for _ in cache.layers]
    return cache


def check_cache(cache) -> None:
    odd = [type(layer).__name__ for layer in cache.layers if type(layer) not in (DynamicLayer, SlackLayer)]
    if odd:
        raise NotImplementedError(f"continuous batching handles plain DynamicLayer caches, not {sorted(set(odd))}")


def repeat_row(cache, rows: int, empty) -> object:
    """`empty` (a fresh cache of the same model) filled with `cache`'s one row repeated `rows` times: a prompt
    prefix that many rows share, computed once."""
    for i, layer in enumerate(_layers(cache)):
        empty.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), i)
    return empty


def _layers(cache):
    return [layer for layer in cache.layers if layer.is_initialized]


def select_rows(cache, mask: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Keep only rows `keep` (in that order) of the cache, in place; returns the matching mask (B', T)."""
    idx = torch.tensor(keep, dtype=torch.long, device=mask.device)
    for layer in _layers(cache):
        if isinstance(layer, SlackLayer):
            layer.keep_rows(idx)
        else:
            layer.keys = layer.keys.index_select(0, idx)
            layer.values = layer.values.index_select(0, idx)
    return mask.index_select(0, idx)


def trim(cache, mask: torch.Tensor) -> torch.Tensor:
    """Drop leading columns that are padding in every row (left when long rows leave); returns the new mask."""
    used = mask.any(dim=0).nonzero()
    first = int(used[0].item()) if used.numel() else mask.shape[1]
    if first == 0:
        return mask
    for layer in _layers(cache):
        layer.keys = layer.keys[:, :, first:, :]
        layer.values = layer.values[:, :, first:, :]
    return mask[:, first:]


def merge(cache, mask: torch.Tensor, other, other_mask: torch.Tensor) -> torch.Tensor:
    """Append `other`'s rows to `cache` (in place), left-padding the shorter one; returns the joint mask."""
    t_a, t_b = mask.shape[1], other_mask.shape[1]
    width = max(t_a, t_b)
    for la, lb in zip(cache.layers, other.layers, strict=True):
        if isinstance(la, SlackLayer):
            la.join_rows(lb.keys, lb.values, width - t_a, width - t_b)
            continue
        ka, va = F.pad(la.keys, (0, 0, width - t_a, 0)), F.pad(la.values, (0, 0, width - t_a, 0))
        kb, vb = F.pad(lb.keys, (0, 0, width - t_b, 0)), F.pad(lb.values, (0, 0, width - t_b, 0))
        la.keys, la.values = torch.cat([ka, kb], dim=0), torch.cat([va, vb], dim=0)
    return torch.cat([F.pad(mask, (width - t_a, 0)), F.pad(other_mask, (width - t_b, 0))], dim=0)
