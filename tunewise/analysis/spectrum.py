"""The spectrum of a weight update dW: singular values, effective rank, norms relative to W0 (pure functions)."""

from __future__ import annotations

import torch


def singular_values(dW: torch.Tensor) -> torch.Tensor:
    """All singular values of a dense dW (float64 Gram eigenvalues: values only, cheaper than an SVD), descending."""
    d = dW.to(torch.float64)
    G = d @ d.T if d.shape[0] <= d.shape[1] else d.T @ d
    return torch.linalg.eigvalsh(G).flip(0).clamp_min(0).sqrt()


def lowrank_singular_values(B: torch.Tensor, A: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Singular values of scale * B @ A without forming it: QR of both factors, then an r x r SVD (exact)."""
    Qb, Rb = torch.linalg.qr(B.to(torch.float64))
    Qa, Ra = torch.linalg.qr(A.to(torch.float64).T)
    return torch.linalg.svdvals(scale * (Rb @ Ra.T))


def effective_rank(s: torch.Tensor, energy: float = 0.9) -> int:
    """How many leading components hold `energy` of the squared Frobenius norm (0 for a zero update)."""
    e = s.to(torch.float64) ** 2
    total = float(e.sum())
    if total <= 0:
        return 0
    cum = torch.cumsum(e, 0) / total
    return int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype) - 1e-12).item()) + 1


def spectrum_summary(s_dw: torch.Tensor, s_w0: torch.Tensor, *, keep: int = 32) -> dict:
    """Effective rank (90%), numerical rank, Frobenius and spectral norm of dW relative to W0, top singular values."""
    s_dw, s_w0 = s_dw.to(torch.float64), s_w0.to(torch.float64)
    fro_dw, fro_w0 = float(s_dw.pow(2).sum().sqrt()), float(s_w0.pow(2).sum().sqrt())
    top = float(s_dw[0]) if s_dw.numel() else 0.0
    tol = top * max(s_dw.numel(), 1) * 1e-7  # float32-level rank threshold
    return {
        "effective_rank_90": effective_rank(s_dw, 0.9),
        "rank": int((s_dw > tol).sum()) if top > 0 else 0,
        "fro_rel": fro_dw / fro_w0 if fro_w0 > 0 else float("inf"),
        "spectral_rel": top / float(s_w0[0]) if s_w0.numel() and float(s_w0[0]) > 0 else float("inf"),
        "singular_values": [float(x) for x in s_dw[:keep]],
    }
