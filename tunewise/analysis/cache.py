"""A disk cache of base decompositions (U0, S0), keyed by a hash of the weight matrix itself.

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

from tunewise.fileio import atomic_write_bytes

# Bump when the decomposition method changes, so old entries are not reused.
METHOD_VERSION = "gram64-v1"


def cache_dir() -> Path:
    root = os.environ.get("TUNEWISE_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "tunewise") / "svd"


def weight_key(W: torch.Tensor) -> str:
    """blake2b of the raw bytes + dtype + shape (+ method version)."""
    t = W.detach().contiguous().cpu()
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{METHOD_VERSION}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class SvdCache:
    """get_or_compute(W0, fn) -> (U0, S0); counts hits/misses. enabled=False computes every time."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = root or cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, W0: torch.Tensor,
                       compute: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.enabled:
            self.misses += 1
            return compute(W0)
        from safetensors.torch import load_file, save

        path = self.root / f"{weight_key(W0)}.safetensors"
        if path.is_file():
            try:
                d = load_file(str(path))
                self.hits += 1
                return d["U0"], d["S0"]
            except Exception:  # a corrupt entry (e.g. disk full earlier) is recomputed, not fatal
                path.unlink(missing_ok=True)
        self.misses += 1
        U0, S0 = compute(W0)
        atomic_write_bytes(path, save({"U0": U0.contiguous(), "S0": S0.contiguous()}))
        return U0, S0
