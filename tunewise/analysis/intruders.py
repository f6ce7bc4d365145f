"""Intruder dimensions (Shuttleworth et al., arXiv 2410.21228), as pure tensor functions.

A left singular vector u_j of the tuned matrix W is an *intruder* when max_i |cos(u_j, u0_i)| < eps over all left
singular vectors u0_i of the pre-trained matrix W0; only the top-k u_j (by singular value) are examined.

Why the Gram route: the straightforward method runs a full SVD of W0 and of W for every matrix. We need all of
U0 but only the top-k vectors of W, and never the right vectors of W0. A symmetric eigendecomposition of the
smaller Gram matrix (W W^T or W^T W), formed in float64, yields exactly these at a fraction of an SVD's cost.
float64 matters: squaring doubles the condition number, and eps64 * sigma_1^2 is far below the eps32 * sigma_1
error of a float32 SVD, so the vectors are at least as accurate as the float32 SVD the authors use.
tests/test_analysis.py checks that counts match a direct float32-SVD reference.

scipy and threadpoolctl are imported where used, each with a torch fallback when it is missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

# Below this sigma_i / sigma_1 a left vector recovered as W v / sigma would lose accuracy; use a float64 SVD.
_TINY_SIGMA_REL = 1e-6


def _gram_eigh(W: torch.Tensor, top: int | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Eigen-decompose the smaller Gram matrix in float64; (vectors, singular values, vectors_are_left), descending.

    With `top`, only the largest `top` eigenpairs are computed (LAPACK syevr through scipy): the tridiagonal
    reduction is shared, but only `top` vectors are found and back-transformed -- still a direct, exact method.
    """
    W64 = W.to(torch.float64)
    wide = W64.shape[0] <= W64.shape[1]
    G = W64 @ W64.T if wide else W64.T @ W64
    if top is not None and top < G.shape[0]:
        evals, evecs = _top_eigh(G, top)
    else:
        evals, evecs = torch.linalg.eigh(G)
        evals, evecs = evals.flip(0), evecs.flip(1)  # descending, like an SVD
    return evecs, evals.clamp_min(0).sqrt(), wide


def base_decomposition(W0: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the analysis keeps of a base matrix: all thin left singular vectors U0 [d_out, m] and singular values
    S0 [m] (m = min(d_out, d_in)); for a tall matrix also the (square) right vectors V0 [d_in, d_in], which the
    low-rank route needs. Matches torch.linalg.svd(W0, full_matrices=False) up to signs and rotations inside
    (near-)equal singular values.
    """
    evecs, s, wide = _gram_eigh(W0)
    if wide:
        return {"U0": evecs.to(torch.float32), "S0": s.to(torch.float32)}
    if s.numel() and s[-1] <= _TINY_SIGMA_REL * s[0]:
        # rank-deficient tall matrix: W v / sigma is unstable for the small sigmas, so pay for an SVD here
        U, S, Vh = torch.linalg.svd(W0.to(torch.float64), full_matrices=False)
        return {"U0": U.to(torch.float32), "S0": S.to(torch.float32), "V0": Vh.T.to(torch.float32)}
    U = (W0.to(torch.float64) @ evecs) / s
    return {"U0": U.to(torch.float32), "S0": s.to(torch.float32), "V0": evecs.to(torch.float32)}


def left_singular_basis(W0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U0, S0) of base_decomposition."""
    d = base_decomposition(W0)
    return d["U0"], d["S0"]


def top_singular(W: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k singular triplets of W: (U [d_out, k], S [k], V [d_in, k]) in float32, descending.

    The other side's vectors come from W v / s or W^T u / s, which is accurate for the large top-k singular values;
    a zero singular value (possible only for a zero or tiny-rank W) gives a zero vector there.
    """
    k = min(k, *W.shape)
    evecs, s, wide = _gram_eigh(W, top=k)
    W64 = W.to(torch.float64)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    if wide:
        U, V = evecs, (W64.T @ evecs) / safe
    else:
        V, U = evecs, (W64 @ evecs) / safe
    return U.to(torch.float32), s.to(torch.float32), V.to(torch.float32)


def _single_blas_thread(n: int):
    """One BLAS thread for small eigenproblems: syevr at n <= 2048 gains little from threads, and on a loaded
    machine OpenBLAS's spinning worker threads (next to torch's own) made a run over 20x slower."""
    if n > 2048:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        return contextlib.nullcontext()


def _top_eigh(M: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k eigenpairs of a symmetric float64 matrix, descending (the subset solver of _gram_eigh)."""
    n = M.shape[0]
    try:
        import scipy.linalg

        with _single_blas_thread(n):
            w, z = scipy.linalg.eigh(M.numpy(), subset_by_index=[n - k, n - 1], driver="evr", check_finite=False)
        w, z = torch.from_numpy(w), torch.from_numpy(z)
    except ImportError:
        w, z = torch.linalg.eigh(M)
        w, z = w[n - k:], z[:, n - k:]
    return w.flip(0), z.flip(1)


def lowrank_similarities(base: dict[str, torch.Tensor], W0: torch.Tensor, B: torch.Tensor, A: torch.Tensor,
                         k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sim_j and singular values of the top-k of W = W0 + B @ A (B already scaled), without forming W W^T.

    Exact algebra in the base's own basis. Wide/square W0 (U0 square): with C = U0^T B and F = A W0^T U0,
        U0^T W W^T U0 = diag(S0^2) + C F + (C F)^T + C (A A^T) C^T,
    whose top eigenvectors z are the tuned vectors in U0 coordinates, so sim_j = max_i |z_ij|.
    Tall W0 (V0 square): with P = V0^T W0^T B and D = A V0,
        V0^T W^T W V0 = diag(S0^2) + P D + (P D)^T + D^T (B^T B) D,
    and for its top eigenvectors z: U0^T u_j = (S0 * z + (U0^T B)(D z)) / s_j.
    Costs O(n^2 r + d_out d_in r) plus one top-k symmetric eigensolve, instead of forming a Gram matrix.
    The identity uses U0 (or V0) as exact base eigenvectors, so it is as accurate as the stored basis (float32,
    about the accuracy of the float32 SVD the direct method uses); tests compare it with that method.
    """
    U0, S0 = base["U0"].to(torch.float64), base["S0"].to(torch.float64)
    W64, B64, A64 = W0.to(torch.float64), B.to(torch.float64), A.to(torch.float64)
    d_out, d_in = W64.shape
    k = min(k, d_out, d_in)
    if d_out <= d_in:
        C = U0.T @ B64
        F = (A64 @ W64.T) @ U0
        CF = C @ F
        M = torch.diag(S0 ** 2) + CF + CF.T + C @ (A64 @ A64.T) @ C.T
        w, z = _top_eigh(M, k)
        return z.abs().amax(dim=0).to(torch.float32), w.clamp_min(0).sqrt().to(torch.float32)
    V0 = base["V0"].to(torch.float64)
    P = ((B64.T @ W64) @ V0).T
    D = A64 @ V0
    PD = P @ D
    M = torch.diag(S0 ** 2) + PD + PD.T + D.T @ (B64.T @ B64) @ D
    w, z = _top_eigh(M, k)
    s = w.clamp_min(0).sqrt()
    proj = S0[:, None] * z + (U0.T @ B64) @ (D @ z)
    return (proj.abs().amax(dim=0) / torch.where(s > 0, s, torch.ones_like(s))).to(torch.float32), s.to(torch.float32)


def max_abs_cos(Ut: torch.Tensor, U0: torch.Tensor) -> torch.Tensor:
    """sim_j = max_i |<Ut[:, j], U0[:, i]>| for every column j of Ut: one matrix product, no loops."""
    return (U0.T.to(Ut.dtype) @ Ut).abs().amax(dim=0)


def count_below(sims: torch.Tensor, eps: float | Sequence[float]) -> dict[float, int] | int:
    """How many similarities are below eps (the intruder count); a dict when several eps are given."""
    if isinstance(eps, (int, float)):
        return int((sims < eps).sum())
    return {float(e): int((sims < e).sum()) for e in eps}


def count_intruders(U0: torch.Tensor, Ut: torch.Tensor, k: int, eps: float) -> int:
    """The design's signature: intruders among the first k columns of Ut against the basis U0."""
    return int((max_abs_cos(Ut[:, :k], U0) < eps).sum())


def intruder_similarities(W0: torch.Tensor, W: torch.Tensor, k: int = 10,
                          U0: torch.Tensor | None = None) -> torch.Tensor:
    """sim_j for the top-k left singular vectors of W against W0's (U0 may come from a cache)."""
    if U0 is None:
        U0, _ = left_singular_basis(W0)
    Ut, _, _ = top_singular(W, k)
    return max_abs_cos(Ut, U0)


def reference_similarities(W0: torch.Tensor, W: torch.Tensor, k: int = 10) -> list[float]:
    """The direct method, written for clarity not speed (full float32 SVDs of W0 and W, explicit loops).

    Used by the tests as ground truth and by the benchmark's baseline.
    """
    U0 = torch.linalg.svd(W0.to(torch.float32), full_matrices=False).U
    Ut = torch.linalg.svd(W.to(torch.float32), full_matrices=False).U
    sims = []
    for j in range(min(k, Ut.shape[1])):
        best = 0.0
        for i in range(U0.shape[1]):
            best = max(best, abs(float(torch.dot(Ut[:, j], U0[:, i]))))
        sims.append(best)
    return sims
