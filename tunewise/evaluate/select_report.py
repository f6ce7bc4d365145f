"""select_report.json and its HTML page: for every record left out, why; coverage per label / slot type before and
after; the score distributions of what was kept and what was not. JSON only here, at the edge.

matplotlib and the report's HTML helpers (which import it) are imported only when a figure or page is drawn.
"""

from __future__ import annotations

import hashlib
import html
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from tunewise.data.select_filter import REASONS, coverage_groups
from tunewise.data.select_write import TOOL, report_paths, subset_bytes
from tunewise.evaluate.select_run import Selection, SelectOptions
from tunewise.fileio import atomic_save_figure, atomic_write_bytes, atomic_write_json, atomic_write_text
from tunewise.models import base_fingerprint

REASON_WORDS = {"invalid": "invalid record", "empty-answer": "empty answer", "duplicate": "exact duplicate",
                "test-leakage": "in the test set", "near-duplicate": "near duplicate", "conflict": "conflicting answer",
                "malformed-answer": "malformed or truncated answer", "truncated-answer": "truncated label",
                "rare-answer": "not one of the labels", "over-length": "over the base's context",
                "low-quality": "low quality score", "not-chosen": "not chosen for diversity"}


def _summary(values: np.ndarray) -> dict:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"n": 0}
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {"n": int(values.size), "mean": round(float(values.mean()), 4), "p10": round(float(p10), 4),
            "p50": round(float(p50), 4), "p90": round(float(p90), 4)}


def _score_groups(sel: Selection) -> dict[str, np.ndarray]:
    """Candidate indices by fate: kept, low-quality, not-chosen (the scored ones only)."""
    idx = np.asarray(sel.scored, dtype=np.int64)
    p = sel.pick
    return {"kept": idx[p.chosen], "low-quality": idx[p.low_quality], "not-chosen": idx[p.not_chosen]}


def coverage(sel: Selection) -> dict[str, dict[str, int]]:
    kept = set(sel.kept)
    before, after = Counter(), Counter()
    for rec in sel.screened.valid:
        groups = coverage_groups(rec, sel.screened)
        before.update(groups)
        if rec.line in kept:
            after.update(groups)
    return {g: {"before": before[g], "after": after[g]} for g in sorted(before, key=lambda g: (-before[g], g))}


def build_report(data: Path, out: Path, sel: Selection, opts: SelectOptions, written: dict) -> dict:
    by_reason = Counter(x.reason for x in sel.left_out)
    groups = _score_groups(sel)
    s = sel.scores
    lines = np.asarray([r.line for r in sel.screened.candidates], dtype=np.int64)
    return {
        "tool": TOOL, "data": str(data), "out": str(out), **written,
        "base": opts.base, "base_fingerprint": base_fingerprint(opts.base), "k": opts.k, "by": list(opts.by),
        "drop_share": opts.drop_share, "test": opts.test, "near_threshold": opts.near_threshold,
        "records": len(sel.kept) + len(sel.left_out), "kept": len(sel.kept), "left_out": len(sel.left_out),
        "left_out_by_reason": {r: by_reason[r] for r in REASONS if by_reason[r]},
        "near_duplicates_readmitted": sel.screened.readmitted,  # --k needed more than the distinct records
        "coverage": coverage(sel), "uncovered": sel.pick.uncovered if sel.pick else [],
        "scores": {name: {fate: _summary(getattr(s, name)[i]) for fate, i in groups.items()}
                   for name in ("ifd", "answer_loss", "alone_loss")},
        "scoring": {"context": s.context, "cached": s.cached, "seconds": s.seconds},
        "left_out_records": [x.as_dict() for x in sel.left_out],
        "record_scores": [[int(lines[i]), *(round(float(getattr(s, n)[i]), 4) for n in ("ifd", "answer_loss"))]
                          for i in sel.scored],
    }


def _plot(report: dict, sel: Selection, folder: Path) -> Path:
    import matplotlib.pyplot as plt

    from tunewise.report import plots  # noqa: F401  (selects the Agg backend)

    groups = _score_groups(sel)
    colors = {"kept": "#2ca02c", "low-quality": "#d62728", "not-chosen": "#7f7f7f"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, name, title in ((axes[0], "ifd", "IFD = loss(answer | prompt) / loss(answer)"),
                            (axes[1], "answer_loss", "loss(answer | prompt), nats per token")):
        values = getattr(sel.scores, name)
        finite = values[~np.isnan(values)]
        bins = np.histogram_bin_edges(finite, bins=30) if finite.size else 10
        for fate, idx in groups.items():
            if len(idx):
                ax.hist(values[idx], bins=bins, alpha=0.6, color=colors[fate], label=f"{fate} ({len(idx)})")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    return atomic_save_figure(fig, folder / "scores.png")


def render_html(report: dict, sel: Selection) -> str:
    from tunewise.report.html import Markup, _img, _page, _table

    reasons = [[REASON_WORDS[r], n] for r, n in report["left_out_by_reason"].items()]
    cov = [[g, c["before"], c["after"]] for g, c in report["coverage"].items()]
    rows = [[x["line"], REASON_WORDS[x["reason"]], x["detail"]] for x in report["left_out_records"]]
    with tempfile.TemporaryDirectory() as tmp:
        plot = _img(_plot(report, sel, Path(tmp)))
    head = (f"<p>{html.escape(report['data'])}: kept {report['kept']} of {report['records']} records "
            f"(--k {report['k']}, by {', '.join(report['by'])}, base {html.escape(report['base'])}) into "
            f"{html.escape(report['out'])}.</p>")
    if report["near_duplicates_readmitted"]:
        head += (f"<p>--k {report['k']} is more than the distinct records left, so "
                 f"{report['near_duplicates_readmitted']} near duplicates came back as candidates.</p>")
    uncovered = report["uncovered"]
    parts = ["<h1>tunewise data select</h1>", head,
             "<h2>Left out, by reason</h2>", _table(["reason", "records"], reasons),
             "<h2>Coverage per label / slot type</h2>",
             _table(["group", "before", "after"], cov) if cov else "<p class=muted>the answers have no labels or "
                                                                    "slot types to keep represented</p>",
             f"<p class=muted>not covered (k too small): {html.escape(', '.join(uncovered))}</p>" if uncovered else "",
             "<h2>Scores</h2>", Markup(plot),
             "<h2>Every record left out</h2>", _table(["line", "reason", "detail"], rows, "left-out")]
    return _page("tunewise data select", parts)


def write_selection(data: Path, out: Path, sel: Selection, opts: SelectOptions) -> dict:
    """The subset, select_report.json and the page; each is rendered before the first is written, so a failure
    leaves nothing half-done. Returns the report."""
    kind, content = subset_bytes(data, out, set(sel.kept), opts.split)
    report = build_report(data, out, sel, opts, {"format": kind, "out_sha256": hashlib.sha256(content).hexdigest()})
    page = render_html(report, sel)
    json_path, html_path = report_paths(out)
    atomic_write_bytes(out, content)
    atomic_write_json(json_path, report)
    atomic_write_text(html_path, page)
    report["report_files"] = [str(json_path), str(html_path)]
    return report
