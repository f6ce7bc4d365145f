"""The running batch's KV cache: rows leave (select), rows join (merge), and columns no row needs go (trim).

Rows are left-padded: every row's tokens end at the last column, its padding columns are 0 in the attention mask
(B, T). Each cache layer holds keys / values (B, heads, T, head_dim); only plain `DynamicLayer`s are handled
(no sliding windows), which `check_cache` says up front.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_cache(cache) -> None:
    from transformers.cache_utils import DynamicLayer

    odd = [type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer]
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
        ka, va = F.pad(la.keys, (0, 0, width - t_a, 0)), F.pad(la.values, (0, 0, width - t_a, 0))
        kb, vb = F.pad(lb.keys, (0, 0, width - t_b, 0)), F.pad(lb.values, (0, 0, width - t_b, 0))
        la.keys, la.values = torch.cat([ka, kb], dim=0), torch.cat([va, vb], dim=0)
    return torch.cat([F.pad(mask, (width - t_a, 0)), F.pad(other_mask, (width - t_b, 0))], dim=0)
