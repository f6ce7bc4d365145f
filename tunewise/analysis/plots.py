"""Figures for the report (matplotlib, Agg backend, PNG): intruders per layer, the cosine-similarity profile of the
top-k vectors, and dW spectra. Each function takes one or more (label, analysis result) pairs and returns a path."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tunewise.fileio import atomic_write_bytes  # noqa: E402

Results = list[tuple[str, dict]]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def intruders_per_layer(results: Results, path: Path, eps: float | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, res in results:
        e = str(eps if eps is not None else res["eps"][0])
        layers = sorted(int(key) for key in res["summary"]["per_layer"] if key != "none")
        counts = [res["summary"]["per_layer"][str(layer)][e] for layer in layers]
        ax.plot(layers, counts, marker="o", label=f"{label} (total {res['summary']['total'][e]})")
    ax.set_xlabel("layer")
    ax.set_ylabel(f"intruder dimensions (top-{results[0][1]['k']}, eps={e})")
    ax.set_title("Intruder dimensions per layer")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def cosine_profile(results: Results, path: Path) -> Path:
    """For each rank j of the tuned matrix, the mean and minimum over matrices of max |cos| to the base vectors."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, res in results:
        sims = [m["similarities"] for m in res["matrices"]]
        k = max(len(s) for s in sims)
        xs = list(range(1, k + 1))
        mean = [sum(s[j] for s in sims if len(s) > j) / sum(1 for s in sims if len(s) > j) for j in range(k)]
        low = [min(s[j] for s in sims if len(s) > j) for j in range(k)]
        line, = ax.plot(xs, mean, marker="o", label=f"{label} mean")
        ax.plot(xs, low, linestyle="--", color=line.get_color(), label=f"{label} min")
    for e in results[0][1]["eps"]:
        ax.axhline(e, color="grey", linewidth=0.8, linestyle=":")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("singular vector of the tuned matrix (rank)")
    ax.set_ylabel("max |cos| to any base vector")
    ax.set_title("Cosine-similarity profile (below a dotted eps line = intruder)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def dw_spectra(results: Results, path: Path) -> Path:
    """Normalised singular values s_i / s_1 of dW, median over matrices of each module type."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, res in results:
        by_module: dict[str, list[list[float]]] = {}
        for m in res["matrices"]:
            sv = m.get("spectrum", {}).get("singular_values") or []
            if sv and sv[0] > 0:
                by_module.setdefault(m["module"], []).append([v / sv[0] for v in sv])
        for module, curves in sorted(by_module.items()):
            n = min(len(c) for c in curves)
            med = [sorted(c[i] for c in curves)[len(curves) // 2] for i in range(n)]
            ax.semilogy(range(1, n + 1), [max(v, 1e-8) for v in med], label=f"{label}: {module}")
    ax.set_xlabel("index")
    ax.set_ylabel("s_i / s_1 of dW (median over layers)")
    ax.set_title("Spectrum of the weight update")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def all_plots(results: Results, folder: Path) -> list[Path]:
    folder = Path(folder)
    return [intruders_per_layer(results, folder / "intruders_per_layer.png"),
            cosine_profile(results, folder / "cosine_profile.png"),
            dw_spectra(results, folder / "dw_spectra.png")]
