"""Learning curves for `tunewise pilot`: score against training examples, extrapolated to the full data set.

Model: a saturating power law, score(n) = a - b * n^-c with b >= 0 and c in [C_MIN, C_MAX] (the usual shape of
data-scaling curves: diminishing returns towards a ceiling a). For each c on a grid the weighted least-squares
(a, b) is closed-form; the profile chi-square over c says which exponents the points allow (within +Z^2 = 4 of the best:
a one-parameter ~95% interval). The prediction band is the envelope over those exponents of the prediction +- Z
standard errors of (a, b), so it widens when three points cannot pin the curvature down. A score that does not
rise with n (flat or falling within noise) is fit as a constant. Pure numbers: no torch, no files.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

C_MIN, C_MAX, C_STEPS = 0.05, 2.0, 80
Z = 2.0  # the band is about 95%: exponents within chi2_min + Z^2, predictions +- Z standard errors


def binomial_sigma(score: float, n_eval: int) -> float:
    """Standard error of a score measured as a fraction of n_eval examples (Laplace-smoothed, so a score of 0 or 1
    still has an error)."""
    p = (score * n_eval + 1) / (n_eval + 2)
    return math.sqrt(p * (1 - p) / max(n_eval, 1))


@dataclass
class CurveFit:
    kind: str  # "power" | "constant"
    a: float
    b: float
    c: float
    chi2: float
    accepted_c: tuple[float, float]  # the range of exponents within chi2_min + Z^2
    points: list[tuple[float, float, float]]  # (n, score, sigma)
    bounds: tuple[float, float]
    band: list[tuple[float, float, float]] | None = None  # per accepted c: (c, a, b) and standard errors, internal

    def predict(self, n: float) -> float:
        return _clip(self.a - self.b * n ** -self.c, self.bounds)

    def interval(self, n: float) -> tuple[float, float]:
        """(low, high) of the prediction at n: envelope over the accepted exponents, +- Z standard errors."""
        lo, hi = math.inf, -math.inf
        for c, a, b, var_a, var_b, cov in self.band or []:
            x = n ** -c
            mean = a - b * x
            se = Z * math.sqrt(max(var_a + x * x * var_b - 2 * x * cov, 0.0))
            lo, hi = min(lo, mean - se), max(hi, mean + se)
        if not math.isfinite(lo):
            lo = hi = self.predict(n)
        return _clip(lo, self.bounds), _clip(hi, self.bounds)

    def as_dict(self, at: float | None = None) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "band"}
        if at is not None:
            lo, hi = self.interval(at)
            out |= {"at": at, "predicted": self.predict(at), "low": lo, "high": hi}
        return out


def _clip(x: float, bounds: tuple[float, float]) -> float:
    return min(max(x, bounds[0]), bounds[1])


def _wls_line(xs: list[float], ys: list[float], ws: list[float]) -> tuple[float, float, float, float, float, float]:
    """Weighted least squares y = a - b x: (a, b, chi2, var_a, var_b, cov_ab)."""
    sw = sum(ws)
    sx = sum(w * x for w, x in zip(ws, xs, strict=True))
    sy = sum(w * y for w, y in zip(ws, ys, strict=True))
    sxx = sum(w * x * x for w, x in zip(ws, xs, strict=True))
    sxy = sum(w * x * y for w, x, y in zip(ws, xs, ys, strict=True))
    det = sw * sxx - sx * sx
    if det <= 1e-300:
        a = sy / sw
        return a, 0.0, sum(w * (y - a) ** 2 for w, y in zip(ws, ys, strict=True)), 1 / sw, 0.0, 0.0
    slope = (sw * sxy - sx * sy) / det  # y = a + slope x, so b = -slope
    a = (sy - slope * sx) / sw
    chi2 = sum(w * (y - a - slope * x) ** 2 for w, x, y in zip(ws, xs, ys, strict=True))
    var_a, var_slope, cov = sxx / det, sw / det, -sx / det
    return a, -slope, chi2, var_a, var_slope, -cov


def fit_curve(ns: list[float], scores: list[float], sigmas: list[float],
              bounds: tuple[float, float] = (0.0, 1.0)) -> CurveFit:
    """The saturating power law through (n, score +- sigma); a constant when the scores do not rise."""
    if not (len(ns) == len(scores) == len(sigmas)) or not ns:
        raise ValueError("need the same number (>= 1) of sizes, scores and sigmas")
    if any(n <= 0 for n in ns) or any(s <= 0 for s in sigmas):
        raise ValueError("sizes and sigmas must be > 0")
    points = list(zip(map(float, ns), map(float, scores), map(float, sigmas), strict=True))
    ws = [1 / s**2 for s in sigmas]
    mean = sum(w * y for w, y in zip(ws, scores, strict=True)) / sum(ws)
    const_chi2 = sum(w * (y - mean) ** 2 for w, y in zip(ws, scores, strict=True))
    constant = CurveFit("constant", mean, 0.0, 1.0, const_chi2, (C_MIN, C_MAX), points, bounds,
                        [(1.0, mean, 0.0, 1 / sum(ws), 0.0, 0.0)])
    if len(set(ns)) < 2:
        return constant
    grid = [C_MIN * (C_MAX / C_MIN) ** (i / (C_STEPS - 1)) for i in range(C_STEPS)]
    fits = []
    for c in grid:
        a, b, chi2, var_a, var_b, cov = _wls_line([n ** -c for n in ns], scores, ws)
        if b >= 0:  # a rising curve; a falling one is not a learning curve (the constant covers it)
            fits.append((chi2, c, a, b, var_a, var_b, cov))
    if not fits:
        return constant
    best = min(fits)
    if len(set(ns)) == 2:  # two sizes pin a line in n^-c for every c: curvature unknown, keep every exponent
        accepted = fits
    else:
        accepted = [f for f in fits if f[0] <= best[0] + Z * Z]
    band = [(c, a, b, var_a, var_b, cov) for _, c, a, b, var_a, var_b, cov in accepted]
    cs = [f[1] for f in accepted]
    return CurveFit("power", best[2], best[3], best[1], best[0], (min(cs), max(cs)), points, bounds, band)
