"""Matplotlib figures of the report; each returns the PNG path it wrote (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tunewise.fileio import atomic_save_figure  # noqa: E402
from tunewise.rundir import RunDir  # noqa: E402

COLORS = {"lora": "#1f77b4", "qlora": "#2ca02c", "full": "#d62728"}


def _color(method: str) -> str:
    return COLORS.get(method, "#7f7f7f")


def _save(fig, path: Path) -> Path:
    return atomic_save_figure(fig, path)


def loss_curves(runs: dict[str, Path], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for method, run_dir in runs.items():
        rows = RunDir(run_dir).metrics()
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
        if train:
            ax.plot(*zip(*train), color=_color(method), lw=1, label=f"{method} train")
        if evals:
            ax.plot(*zip(*evals), "o--", color=_color(method), label=f"{method} eval")
    ax.axhline(0.2, ls=":", c="grey", lw=0.8, label="overfitting threshold 0.2")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Loss curves")
    return _save(fig, out)


def gap_band(verdict: dict, tie_points: float, out: Path) -> Path:
    """The gap costlier - cheaper with its 95% band as an error bar, beside zero and the tie margin: a band that
    crosses the margin's edge is an undecided call."""
    return gap_bands({"": verdict}, tie_points, out, f"full - adapter, points ({verdict['examples']} examples, "
                                                     f"{verdict['seeds']} seed(s)): {verdict['call']}")


def gap_bands(rows: dict[str, dict], tie_points: float, out: Path, xlabel: str, title: str | None = None) -> Path:
    """Several gaps, one row each (label -> a call's gap_points, band_points, call), each with its 95% band as an
    error bar beside zero and the tie margin (the study draws one per claim: a row per task and method)."""
    fig, ax = plt.subplots(figsize=(7, 1.3 + 0.5 * len(rows)))
    ax.axvspan(-tie_points, tie_points, color="#dddddd", label=f"tie margin +-{tie_points:g}")
    ax.axvline(0, c="grey", lw=0.8)
    reach = tie_points
    for y, v in enumerate(reversed(rows.values())):
        gap, (low, high) = v["gap_points"], v["band_points"]
        ax.errorbar([gap], [y], xerr=[[gap - low], [high - gap]], fmt="o", color="#d62728", capsize=6,
                    label=f"gap {gap:+.1f} [{low:+.1f}, {high:+.1f}]" if len(rows) == 1 else None)
        if len(rows) > 1:
            ax.annotate(f"{gap:+.1f} [{low:+.1f}, {high:+.1f}] {v['call']}", (high, y), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=7)
        reach = max(reach, abs(low), abs(high))
    ax.set_xlim(-reach * 1.15, reach * (1.15 if len(rows) == 1 else 1.9))
    labels = list(reversed(rows))
    ax.set_yticks(range(len(rows)) if any(labels) else [], labels if any(labels) else [], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, out)


def cost_bars(rows: dict[str, dict], out: Path) -> Path:
    methods = list(rows)
    panels = [("score", "task score", 100), ("peak_rss_mb", "peak memory (MB)", 1), ("train_time_s", "train time (s)", 1)]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    for ax, (key, title, scale) in zip(axes, panels):
        values = [(rows[m].get(key) or 0) * scale for m in methods]
        spread = [(rows[m].get("score_sd") or 0) * scale if key == "score" else 0 for m in methods]
        bars = ax.bar(methods, values, color=[_color(m) for m in methods], yerr=spread if any(spread) else None,
                      capsize=4)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_title(title, fontsize=9)
    return _save(fig, out)


def intruder_bars(per_layer: dict[str, dict], out: Path) -> Path:
    """per_layer: {method: {layer: count}}."""
    fig, ax = plt.subplots(figsize=(7, 3))
    layers = sorted({int(k) for counts in per_layer.values() for k in counts})
    width = 0.8 / max(1, len(per_layer))
    for i, (method, counts) in enumerate(per_layer.items()):
        xs = [layer + i * width for layer in layers]
        ax.bar(xs, [counts.get(str(layer), 0) for layer in layers], width, color=_color(method), label=method)
    ax.set_xlabel("layer")
    ax.set_ylabel("intruders (top-10, eps 0.5)")
    ax.set_xticks([layer + width * (len(per_layer) - 1) / 2 for layer in layers], [str(x) for x in layers])
    ax.legend(fontsize=8)
    ax.set_title("Intruder dimensions per layer")
    return _save(fig, out)


def retention_bars(retention: dict[str, dict], out: Path) -> Path:
    """retention: {method: {probe: {before, after, ...}}}."""
    probes = sorted({p for r in retention.values() for p in r})
    fig, axes = plt.subplots(1, len(probes), figsize=(4 * len(probes), 3), squeeze=False)
    for ax, probe in zip(axes[0], probes):
        methods = [m for m in retention if probe in retention[m]]
        before = retention[methods[0]][probe]["before"]
        labels = ["base"] + methods
        values = [before] + [retention[m][probe]["after"] for m in methods]
        bars = ax.bar(labels, values, color=["#999999"] + [_color(m) for m in methods])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        hib = retention[methods[0]][probe].get("higher_is_better", True)
        ax.set_title(f"{probe} ({'higher' if hib else 'lower'} is better)", fontsize=9)
    return _save(fig, out)
