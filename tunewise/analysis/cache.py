"""A disk cache of base decompositions (U0, S0 and, for tall matrices, V0), keyed by a hash of the weight matrix itself.

Keying by content (not by model name) means N adapters or runs of one base pay for one decomposition, a matrix a
full fine-tune left unchanged is recognised, and a changed base can never be served a stale entry.
Location: $TUNEWISE_CACHE/svd, else ~/.cache/tunewise/svd.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from tunewise.fileio import cache_root

# Bump when the decomposition method changes, so old entries are not reused.
METHOD_VERSION = "gram64-v2"


def cache_dir() -> Path:
    return cache_root() / "svd"


def weight_key(W: torch.Tensor) -> str:
    """blake2b of the raw bytes + dtype + shape (+ method version)."""
    t = W.detach().contiguous().cpu()
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{METHOD_VERSION}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class SvdCache:
    """get_or_compute(W0, fn) -> fn(W0) (a dict of tensors), from disk when cached; counts hits and misses.
    enabled=False computes every time."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = root or cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, W0: torch.Tensor,
                       compute: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if not self.enabled:
            self.misses += 1
            return compute(W0)
        path = self.root / f"{weight_key(W0)}.safetensors"
        if path.is_file():
            try:
                with safe_open(str(path), "pt") as f:
                    digest = (f.metadata() or {}).get("digest")
                d = load_file(str(path))
                if digest == _digest(d):
                    self.hits += 1
                    return d
            except Exception:  # unreadable: fall through and recompute
                pass
            path.unlink(missing_ok=True)  # corrupt or torn entry (e.g. power loss): recomputed, never trusted
        self.misses += 1
        d = {name: t.contiguous() for name, t in compute(W0).items()}
        self.root.mkdir(parents=True, exist_ok=True)
        # write-then-rename without fsync (a cache need not survive power loss: the digest catches torn files),
        # which keeps a cold run from paying one disk flush per matrix
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(save(d, metadata={"digest": _digest(d)}))
        os.replace(tmp, path)
        return d


def _digest(d: dict[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(d):
        h.update(name.encode())
        h.update(d[name].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
