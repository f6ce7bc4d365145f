"""The typed result of `analyze`: per-matrix intruder counts keyed by eps (a float), totals derived from them.

It becomes JSON only in `as_dict`, whose shape (eps as string keys, "summary" with total / per_layer / per_module)
is what analysis.json, compare.json and `tunewise analyze --json` have always held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MatrixIntruders:
    """One adapted matrix: the similarities of its top-k singular vectors to the base's, intruders per eps."""

    name: str
    layer: int | None
    module: str
    shape: list[int]
    similarities: list[float]
    intruders: dict[float, int]
    spectrum: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "layer": self.layer, "module": self.module, "shape": self.shape,
               "similarities": self.similarities, "intruders": {str(e): n for e, n in self.intruders.items()}}
        if self.spectrum is not None:
            out["spectrum"] = self.spectrum
        return out


@dataclass(frozen=True)
class IntruderGroup:
    """The matrices of one layer or module type, and their intruders per eps."""

    matrices: int
    intruders: dict[float, int]

    def as_dict(self) -> dict[str, int]:
        return {"matrices": self.matrices, **{str(e): n for e, n in self.intruders.items()}}


@dataclass
class AnalysisResult:
    base: str
    tuned: str
    tuned_path: str
    kind: str
    k: int
    eps: list[float]
    matrices: list[MatrixIntruders]
    skipped: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> dict[float, int]:
        return {e: sum(m.intruders[e] for m in self.matrices) for e in self.eps}

    @property
    def matrices_with_intruders(self) -> dict[float, int]:
        return {e: sum(1 for m in self.matrices if m.intruders[e] > 0) for e in self.eps}

    def _groups(self, key: str) -> dict[str, IntruderGroup]:
        groups: dict[str, list[MatrixIntruders]] = {}
        for m in self.matrices:
            value = getattr(m, key)
            groups.setdefault("none" if value is None else str(value), []).append(m)
        return {g: IntruderGroup(len(ms), {e: sum(m.intruders[e] for m in ms) for e in self.eps})
                for g, ms in groups.items()}

    @property
    def per_layer(self) -> dict[str, IntruderGroup]:
        """Keyed by the layer index as text ('none' for matrices outside the layers), as in the JSON."""
        return self._groups("layer")

    @property
    def per_module(self) -> dict[str, IntruderGroup]:
        return self._groups("module")

    @property
    def spectrum(self) -> dict[str, Any] | None:
        """The dW spectrum over all matrices (None when it was not computed)."""
        spec = [m.spectrum for m in self.matrices if m.spectrum is not None]
        if not spec:
            return None
        ranks = sorted(s["effective_rank_90"] for s in spec)
        return {"effective_rank_90_median": ranks[len(ranks) // 2], "effective_rank_90_max": ranks[-1],
                "fro_rel_mean": sum(s["fro_rel"] for s in spec) / len(spec),
                "spectral_rel_mean": sum(s["spectral_rel"] for s in spec) / len(spec)}

    def summary_dict(self) -> dict[str, Any]:
        out = {"total": _keyed(self.total), "matrices": len(self.matrices),
               "matrices_with_intruders": _keyed(self.matrices_with_intruders),
               "per_layer": {g: v.as_dict() for g, v in self.per_layer.items()},
               "per_module": {g: v.as_dict() for g, v in self.per_module.items()}}
        if (spectrum := self.spectrum) is not None:
            out["spectrum"] = spectrum
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"base": self.base, "tuned": self.tuned, "tuned_path": self.tuned_path, "kind": self.kind,
                "k": self.k, "eps": self.eps, "summary": self.summary_dict(),
                "matrices": [m.as_dict() for m in self.matrices], "skipped": self.skipped, "cache": self.cache,
                "seconds": self.seconds}

    def slim(self, eps: float) -> dict[str, Any]:
        """compare's analysis.json: the counts at one eps, with the spectrum and the time."""
        return {"total": self.total[eps], "per_layer": {g: v.intruders[eps] for g, v in self.per_layer.items()},
                "per_module": {g: v.intruders[eps] for g, v in self.per_module.items()},
                "spectrum": self.spectrum, "seconds": self.seconds}


def _keyed(values: dict[float, int]) -> dict[str, int]:
    return {str(e): n for e, n in values.items()}
