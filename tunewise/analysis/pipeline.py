"""Analyse one tuned model against its base: per-matrix intruder similarities and dW spectra, then totals per
layer, per module type and for the model. Returns plain dicts (JSON-ready); printing is the command's job."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from tunewise.analysis.cache import SvdCache
from tunewise.analysis.intruders import (
    base_decomposition,
    count_below,
    lowrank_similarities,
    max_abs_cos,
    top_singular,
)
from tunewise.analysis.spectrum import lowrank_singular_values, singular_values, spectrum_summary
from tunewise.analysis.weights import MatrixPair, TunedWeights, open_tuned


def analyze_pair(pair: MatrixPair, *, k: int, eps: Sequence[float], cache: SvdCache,
                 spectrum: bool = True) -> dict:
    """All numbers for one matrix. An unchanged matrix (dW == 0) has W's vectors equal to W0's: 0 intruders."""
    base = cache.get_or_compute(pair.W0, base_decomposition)
    U0, S0 = base["U0"], base["S0"]
    kk = min(k, *pair.W.shape)
    unchanged = pair.lora is None and torch.equal(pair.W, pair.W0)
    lf = pair.lora
    if unchanged:
        sims = torch.ones(kk)
    elif lf is not None and lf.magnitude is None and not lf.transposed:
        # plain LoRA: dW = scaling * B @ A has rank r, so work in the base's basis (no Gram of W)
        sims, _ = lowrank_similarities(base, pair.W0, lf.scaling * lf.B, lf.A, kk)
    else:
        Ut, _, _ = top_singular(pair.W, kk)
        sims = max_abs_cos(Ut, U0)
    row: dict = {
        "name": pair.name, "layer": pair.layer, "module": pair.module, "shape": list(pair.W0.shape),
        "similarities": [round(float(s), 6) for s in sims],
        "intruders": {str(e): n for e, n in count_below(sims, list(eps)).items()},
    }
    if spectrum:
        if pair.lora is not None and pair.lora.magnitude is None:
            s_dw = lowrank_singular_values(pair.lora.B, pair.lora.A, pair.lora.scaling)
        elif unchanged:
            s_dw = torch.zeros(1, dtype=torch.float64)
        else:
            s_dw = singular_values(pair.W - pair.W0)
        row["spectrum"] = spectrum_summary(s_dw, S0)
    return row


def _totals(rows: list[dict], eps: Sequence[float], key: str) -> dict:
    out: dict = {}
    for r in rows:
        g = "none" if r[key] is None else str(r[key])
        slot = out.setdefault(g, {"matrices": 0, **{str(e): 0 for e in eps}})
        slot["matrices"] += 1
        for e in eps:
            slot[str(e)] += r["intruders"][str(e)]
    return out


def summarise(rows: list[dict], eps: Sequence[float]) -> dict:
    total = {str(e): sum(r["intruders"][str(e)] for r in rows) for e in eps}
    spec = [r["spectrum"] for r in rows if "spectrum" in r]
    out = {
        "total": total,
        "matrices": len(rows),
        "matrices_with_intruders": {str(e): sum(1 for r in rows if r["intruders"][str(e)] > 0) for e in eps},
        "per_layer": _totals(rows, eps, "layer"),
        "per_module": _totals(rows, eps, "module"),
    }
    if spec:
        ranks = sorted(s["effective_rank_90"] for s in spec)
        out["spectrum"] = {
            "effective_rank_90_median": ranks[len(ranks) // 2],
            "effective_rank_90_max": ranks[-1],
            "fro_rel_mean": sum(s["fro_rel"] for s in spec) / len(spec),
            "spectral_rel_mean": sum(s["spectral_rel"] for s in spec) / len(spec),
        }
    return out


def analyze(base: str, tuned: str, *, k: int = 10, eps: Sequence[float] = (0.5,), cache: SvdCache | None = None,
            modules: list[str] | None = None, spectrum: bool = True,
            weights: TunedWeights | None = None) -> dict:
    """The full analysis of TUNED (run dir / PEFT adapter / full model folder) against BASE."""
    t0 = time.perf_counter()
    cache = cache or SvdCache()
    tw = weights or open_tuned(base, tuned)
    hits0, misses0 = cache.hits, cache.misses
    rows = [analyze_pair(p, k=k, eps=eps, cache=cache, spectrum=spectrum) for p in tw.pairs(modules)]
    return {
        "base": str(base), "tuned": str(tuned), "tuned_path": str(tw.tuned_dir), "kind": tw.kind,
        "k": k, "eps": [float(e) for e in eps],
        "summary": summarise(rows, eps),
        "matrices": rows,
        "skipped": tw.skipped,
        "cache": {"dir": str(cache.root) if cache.enabled else None, "hits": cache.hits - hits0,
                  "misses": cache.misses - misses0},
        "seconds": round(time.perf_counter() - t0, 3),
    }
