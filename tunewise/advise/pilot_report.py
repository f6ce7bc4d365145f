"""The pilot's HTML section and its learning-curve plot (measured points, fitted curve, band at the full size)."""

from __future__ import annotations

import html
from pathlib import Path

from tunewise.advise.curves import CurveFit
from tunewise.fileio import atomic_save_figure, atomic_write_text

COLORS = {"lora": "tab:blue", "qlora": "tab:orange", "full": "tab:green"}


def _fit_from(d: dict) -> CurveFit:
    return CurveFit(d["kind"], d["a"], d["b"], d["c"], d["chi2"], tuple(d["accepted_c"]),
                    [tuple(p) for p in d["points"]], tuple(d["bounds"]))


def plot_curves(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=100)
    n_full = result["full_size"]
    for m, d in result["curves"].items():
        fit, color = _fit_from(d), COLORS.get(m, "black")
        ns = [p[0] for p in fit.points]
        lo_b, hi_b = fit.bounds  # error bars stop at the score's range
        yerr = [[min(p[2], p[1] - lo_b) for p in fit.points], [min(p[2], hi_b - p[1]) for p in fit.points]]
        ax.errorbar(ns, [p[1] for p in fit.points], yerr=yerr, fmt="o", color=color, label=f"{m} measured",
                    capsize=3, alpha=0.8)
        lo_n = min(ns) * 0.8
        grid = [lo_n * (n_full * 1.25 / lo_n) ** (i / 60) for i in range(61)]
        ax.plot(grid, [fit.predict(n) for n in grid], color=color, lw=1.2, label=f"{m} fit ({fit.kind})")
        p = result["predictions"][m]
        ax.errorbar([n_full], [p["score"]], yerr=[[p["score"] - p["low"]], [p["high"] - p["score"]]], fmt="D",
                    color=color, mfc="white", capsize=4)
    ax.axvline(n_full, ls="--", c="grey", lw=0.8, label=f"full data ({n_full})")
    if result.get("base_score") is not None:
        ax.axhline(result["base_score"], ls=":", c="black", lw=0.8, label="untuned base")
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel(result.get("metric") or "score")
    ax.set_title("pilot: learning curves and the prediction at the full data", fontsize=10)
    ax.legend(fontsize=7)
    return atomic_save_figure(fig, path)


def pilot_section(result: dict, out: Path) -> str:
    """An HTML <section> (embeddable in other reports) with the verdict, the runs, the predictions and the plots."""
    from tunewise.report.html import _img, _table

    v = result["verdict"]
    png = plot_curves(result, out / "pilot_curves.png")
    rows = [[r["method"], r["n"], r["score"], r["lr"], r["steps"], r["final_train_loss"], r["seconds"]]
            for r in result["runs"]]
    preds = [[m, p["score"], f"[{p['low']:.3f}, {p['high']:.3f}]", p["measured_best"], p["memory_gib"],
              "yes" if p["fits"] else "no"] for m, p in result["predictions"].items()]
    parts = ["<section id=\"pilot\"><h2>Pilot: measured learning curves</h2>",
             f"<p class=\"verdict\"><b>{html.escape(str(v['recommendation']))}</b> "
             f"(evidence: {html.escape(v['evidence'])}{', contradicts the rule table' if v['contradicts_rules'] else ''}"
             f"). {html.escape(v['text'])}</p>",
             f"<p class=\"muted\">{result['full_size']} training examples; scored on {result['validation_n']} "
             f"validation examples with '{html.escape(result['scorer'])}' ({html.escape(result['metric'] or '')}); "
             f"untuned base {result['base_score']:.3f}; {result['seconds']:.0f}s of a {result['budget_s']:.0f}s "
             "budget.</p>",
             _img(png),
             _table(["method", "predicted at full data", "band (~95%)", "best measured", "memory GiB (plan)",
                     "fits"], preds),
             _table(["method", "examples", "score", "lr", "steps", "final train loss", "seconds"], rows)]
    for m, note in result["lr_notes"].items():
        parts.append(f"<p class=\"muted\">lr {html.escape(m)}: {html.escape(note)}</p>")
        fl = out / "find_lr" / m / "find_lr.png"
        if fl.is_file():
            parts.append(_img(fl))
    for s in result["skipped"]:
        parts.append(f"<p class=\"muted\">skipped: {html.escape(s)}</p>")
    parts.append("</section>")
    return "".join(parts)


def write_html(result: dict, out: Path) -> Path:
    from tunewise.report.html import _page

    path = out / "pilot.html"
    atomic_write_text(path, _page("tunewise pilot", ["<h1>tunewise pilot</h1>",
                                                              pilot_section(result, out)]))
    return path
