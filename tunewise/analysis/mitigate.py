"""Intruder mitigation (the paper's causal test): W' = W0 + dW + (lambda - 1) * sum_i s_i u_i v_i^T over the
selected intruder triplets (u_i, s_i, v_i) of the *merged* W, then the new dW' is re-factorised to the adapter's
rank so it loads as an ordinary PEFT adapter.

Direction of lambda: the intruder's singular value becomes lambda * s_i. lambda = 1 leaves the adapter unchanged
(the original tensors are copied bit for bit); lambda = 0 removes the direction; 0 < lambda < 1 shrinks it
(the paper found lambda 0.3 .. 0.7 cut forgetting). (PEFT's reduce_intruder_dimension docstring describes its
mitigation_lambda the other way round from its code; this module follows the formula above.)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from tunewise.adapters.format import read_weights, write_copy
from tunewise.analysis.cache import SvdCache
from tunewise.analysis.intruders import base_decomposition, max_abs_cos, top_singular
from tunewise.analysis.weights import TunedWeights
from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_json, replace_dir
from tunewise.ownership import mark_dir


def scaled_weight(W: torch.Tensor, U: torch.Tensor, S: torch.Tensor, V: torch.Tensor, lam: float) -> torch.Tensor:
    """Dense reference: W + (lam - 1) * U diag(S) V^T (the triplets are W's own singular triplets)."""
    return W + (lam - 1.0) * (U * S) @ V.T


def refactor_lowrank(B: torch.Tensor, A: torch.Tensor, scaling: float, U: torch.Tensor, S: torch.Tensor,
                     V: torch.Tensor, lam: float, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-`rank` factors (B', A') with scaling * B' @ A' ~= scaling * B @ A + (lam - 1) * U diag(S) V^T.

    The target has rank <= r + #intruders and is given by factors, so QR of both sides plus a small SVD of the core
    gives its exact SVD without forming the dense matrix. Singular values are split evenly (sqrt to each factor),
    so B' and A' have matching norms. Returns (B', A', relative Frobenius error of the truncation).
    """
    B64, A64 = B.to(torch.float64), A.to(torch.float64)
    c = (lam - 1.0) / scaling
    L = torch.cat([B64, c * U.to(torch.float64) * S.to(torch.float64)], dim=1)  # [d_out, r + q]
    R = torch.cat([A64, V.to(torch.float64).T], dim=0)  # [r + q, d_in]
    QL, RL = torch.linalg.qr(L)
    QR, RR = torch.linalg.qr(R.T)
    Uc, Sc, Vhc = torch.linalg.svd(RL @ RR.T)
    Uf, Vf = QL @ Uc, QR @ Vhc.T
    root = Sc[:rank].sqrt()
    B_new = Uf[:, :rank] * root
    A_new = root[:, None] * Vf[:, :rank].T
    total = float(Sc.pow(2).sum())
    err = (float(Sc[rank:].pow(2).sum()) / total) ** 0.5 if total > 0 else 0.0
    return B_new.to(torch.float32), A_new.to(torch.float32), err


def select_intruders(sims: torch.Tensor, eps: float, which: str = "top") -> list[int]:
    """Indices (into the top-k) below eps: the first (highest singular value) only, or all of them."""
    idx = [int(i) for i in torch.nonzero(sims < eps).flatten()]
    return idx[:1] if which == "top" else idx


def mitigate_adapter(tw: TunedWeights, out: Path, lam: float, *, k: int = 10, eps: float = 0.5,
                     which: str = "top", cache: SvdCache | None = None,
                     modules: list[str] | None = None) -> dict:
    """Write a new PEFT adapter folder at `out` with the selected intruders of every matrix scaled by lam."""
    if tw.kind == "full":
        raise TunewiseError("--mitigate rewrites a LoRA adapter, but TUNED is a full fine-tuned model",
                            "give a LoRA adapter folder or a run directory trained with method lora/qlora")
    if tw.kind == "dora":
        raise TunewiseError("--mitigate does not support DoRA adapters (the magnitude vector renormalises rows, "
                            "so a rescaled direction cannot be written back as B @ A)",
                            "analyse it without --mitigate, or use a plain LoRA adapter")
    if lam < 0:
        raise TunewiseError(f"--mitigate {lam}: lambda must be >= 0", "1 = unchanged, 0 = remove the direction")
    if which not in ("top", "all"):
        raise TunewiseError(f"unknown intruder selection '{which}'", "use 'top' or 'all'")
    cache = cache or SvdCache()
    out = Path(out)
    if out.resolve() == tw.tuned_dir.resolve():
        raise TunewiseError(f"--out '{out}' is the input adapter", "write the mitigated adapter to a new folder")
    tensors = read_weights(tw.tuned_dir)
    new = dict(tensors)
    rows = []
    for pair in tw.pairs(modules):
        lf = pair.lora
        assert lf is not None
        U0 = cache.get_or_compute(pair.W0, base_decomposition)["U0"]
        U, S, V = top_singular(pair.W, k)
        idx = select_intruders(max_abs_cos(U, U0), eps, which)
        row = {"name": pair.name, "intruders_scaled": len(idx), "rel_error": 0.0}
        if lf.transposed:
            row["note"] = "embedding / fan_in_fan_out factors are copied unchanged"
            idx = []
        if idx and lam != 1.0:
            B_new, A_new, err = refactor_lowrank(lf.B, lf.A, lf.scaling, U[:, idx], S[idx], V[:, idx], lam,
                                                 lf.A.shape[0])
            new[lf.key_A] = A_new.to(tensors[lf.key_A].dtype).contiguous()
            new[lf.key_B] = B_new.to(tensors[lf.key_B].dtype).contiguous()
            row["rel_error"] = err
            row["singular_values"] = [float(s) for s in S[idx]]
        rows.append(row)
    report = {
        "lambda": lam, "eps": eps, "k": k, "which": which, "source": str(tw.tuned_dir), "out": str(out),
        "matrices_changed": sum(1 for r in rows if r["intruders_scaled"] and lam != 1.0 and "note" not in r),
        "intruders_scaled": sum(r["intruders_scaled"] for r in rows),
        "max_rel_error": max((r["rel_error"] for r in rows), default=0.0),
        "matrices": rows,
    }
    _write_adapter(tw.tuned_dir, out, new, report)
    return report


def _write_adapter(src: Path, out: Path, tensors: dict[str, torch.Tensor], report: dict) -> None:
    """Copy the adapter folder (config, tokenizer files), replace the weights, add mitigation.json; atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_copy(src, tmp, tensors)
        atomic_write_json(tmp / "mitigation.json", report)
        mark_dir(tmp, "mitigated adapter")  # so a later --mitigate may replace it, and nothing else may
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
