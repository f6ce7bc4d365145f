"""Analyse one tuned model against its base: per-matrix intruder similarities and dW spectra, then totals per
layer, per module type and for the model (an AnalysisResult; `as_dict` for JSON). Printing is the command's job."""

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
from tunewise.analysis.result import AnalysisResult, MatrixIntruders
from tunewise.analysis.spectrum import lowrank_singular_values, singular_values, spectrum_summary
from tunewise.analysis.weights import MatrixPair, TunedWeights, open_tuned
from tunewise.progress import progress_bar


def analyze_pair(pair: MatrixPair, *, k: int, eps: Sequence[float], cache: SvdCache,
                 spectrum: bool = True) -> MatrixIntruders:
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
    summary = None
    if spectrum:
        if pair.lora is not None and pair.lora.magnitude is None:
            s_dw = lowrank_singular_values(pair.lora.B, pair.lora.A, pair.lora.scaling)
        elif unchanged:
            s_dw = torch.zeros(1, dtype=torch.float64)
        else:
            s_dw = singular_values(pair.W - pair.W0)
        summary = spectrum_summary(s_dw, S0)
    return MatrixIntruders(pair.name, pair.layer, pair.module, list(pair.W0.shape),
                           [round(float(s), 6) for s in sims], count_below(sims, [float(e) for e in eps]), summary)


def analyze(base: str, tuned: str, *, k: int = 10, eps: Sequence[float] = (0.5,), cache: SvdCache | None = None,
            modules: list[str] | None = None, spectrum: bool = True,
            weights: TunedWeights | None = None) -> AnalysisResult:
    """The full analysis of TUNED (run dir / PEFT adapter / full model folder) against BASE."""
    t0 = time.perf_counter()
    cache = cache or SvdCache()
    tw = weights or open_tuned(base, tuned)
    hits0, misses0 = cache.hits, cache.misses
    pairs = tw.pairs(modules)
    bar = progress_bar(len(pairs), "analysis", "matrix")
    try:
        rows = []
        for p in pairs:
            rows.append(analyze_pair(p, k=k, eps=eps, cache=cache, spectrum=spectrum))
            bar.update(1)
    finally:
        bar.close()
    return AnalysisResult(str(base), str(tuned), str(tw.tuned_dir), tw.kind, k, [float(e) for e in eps], rows,
                          tw.skipped, {"dir": str(cache.root) if cache.enabled else None,
                                       "hits": cache.hits - hits0, "misses": cache.misses - misses0},
                          round(time.perf_counter() - t0, 3))
