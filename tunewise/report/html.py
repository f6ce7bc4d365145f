"""The HTML report: tables and embedded PNGs, no scripts, no network."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from tunewise.decide.margins import MARGINS
from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_text
from tunewise.report import plots
from tunewise.report.text import number_text, retention_words
from tunewise.rundir import SUMMARY, RunDir
from tunewise.userfiles import read_json_file

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;
background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;
text-align:right}th{background:#f0f3f7}td:first-child,th:first-child{text-align:left}
.verdict{background:#eef6ee;border-left:4px solid #2ca02c;padding:.6em 1em;font-size:1.05em}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}pre{background:#f7f7f7;padding:.6em;overflow:auto;
font-size:.8em}.muted{color:#777;font-size:.85em}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


class Markup(str):
    """A cell already written as HTML (escaped where it holds text), put in a table as it is."""


def _fmt(value) -> str:
    if isinstance(value, Markup):
        return value
    if isinstance(value, dict):
        return html.escape(", ".join(f"{k}: {v}" for k, v in value.items()) or "none")
    if value is None or isinstance(value, (int, float)):
        return number_text(value)
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list], table_id: str | None = None) -> str:
    tid = f' id="{table_id}"' if table_id else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{tid}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


COMPARE_COLUMNS = [("score", "task score"), ("score_sd", "sd over seeds"), ("metric", "metric"), ("retention_summary", "retention change"),
                   ("trainable_params", "trainable params"), ("output_size_mb", "output MB"),
                   ("train_time_s", "train time s"), ("tokens_per_s", "tokens/s"), ("peak_rss_mb", "peak RSS MB"),
                   ("final_train_loss", "final train loss"), ("final_eval_loss", "final eval loss"),
                   ("guard_events", "guard events"), ("intruders", "intruders")]


def compare_html(cmp: dict, out_dir: Path) -> str:
    rows = cmp["rows"]
    runs = {m: Path(r["run_dir"]) for m, r in rows.items()}
    for r in rows.values():
        r["retention_summary"] = retention_words(r.get("retention"))
    table = _table(["method"] + [label for _, label in COMPARE_COLUMNS],
                   [[m] + [r.get(k) for k, _ in COMPARE_COLUMNS] for m, r in rows.items()], "comparison")
    figs = [plots.loss_curves(runs, out_dir / "loss_curves.png"), plots.cost_bars(rows, out_dir / "cost.png")]
    if cmp["verdict"].get("band_points"):
        figs.insert(0, plots.gap_band(cmp["verdict"], MARGINS.tie, out_dir / "gap_band.png"))
    per_layer = {m: _per_layer(Path(r["run_dir"])) for m, r in rows.items()}
    if any(per_layer.values()):
        figs.append(plots.intruder_bars({m: v for m, v in per_layer.items() if v}, out_dir / "intruders.png"))
    retention = {m: r["retention"] for m, r in rows.items() if r.get("retention")}
    if retention:
        figs.append(plots.retention_bars(retention, out_dir / "retention.png"))
    spec = cmp["spec"]
    title = f"tunewise compare: {spec.get('task') or spec.get('data')} on {spec['base']}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="muted">{html.escape(cmp["created"])} &middot; task kind: {html.escape(cmp["kind"])} '
             f"&middot; base parameters: {cmp['base_params']:,}</p>",
             f'<div class="verdict">{html.escape(cmp["verdict"]["text"])}</div>', _band_note(cmp["verdict"]),
             "<h2>Comparison</h2>", table, _base_line(cmp.get("base")),
             '<p class="muted">Score: the task\'s primary metric on the test split. Retention: relative change of '
             "the base's probe scores. Intruders: top-10 singular vectors with max |cos| &lt; 0.5 to the base's, "
             "summed over matrices.</p>", "<h2>Plots</h2>", *(_img(f) for f in figs),
             "<h2>Learning rates</h2>", _table(["method", "lr"], [[m, n] for m, n in cmp["lr_notes"].items()])]
    parts += _advice_html(cmp.get("advice"))
    parts.append("<h2>Resolved configs</h2>")
    for m, run in runs.items():
        cfg = RunDir(run).config_text()
        cfg = "(missing)" if cfg is None else cfg
        parts.append(f"<h3>{html.escape(m)}</h3><pre>{html.escape(cfg)}</pre>")
    return _page(title, parts)


def _band_note(verdict: dict) -> str:
    """What the band means, and how to narrow it."""
    if not verdict.get("band_points"):
        return ""
    return ('<p class="muted">The band is the 95% range of the gap from the test examples both methods answered '
            "(and the seeds, with --seeds): a call is made only when the whole band clears the "
            f"{MARGINS.tie:g}-point tie margin; it narrows as 1/sqrt(examples) -- raise --eval-size or --seeds.</p>")


def _base_line(base: dict | None) -> str:
    if not base:
        return ""
    return f"<p>Untuned base on the same test split: {html.escape(str(base['metric']))} {_fmt(base['score'])}.</p>"


def _per_layer(run_dir: Path) -> dict:
    f = RunDir(run_dir).analysis_path
    return json.loads(f.read_text()).get("per_layer", {}) if f.is_file() else {}


def _citation(c) -> str:
    """One cited source: its title (the finding as a tooltip), linked when it has a web address."""
    if not isinstance(c, dict):  # a bare evidence id
        return html.escape(str(c))
    text = html.escape(str(c.get("source") or c.get("id") or ""))
    tip = f' title="{html.escape(str(c["finding"]))}"' if c.get("finding") else ""
    url = str(c.get("url") or "")
    if url.startswith(("https://", "http://")):
        return f'<a href="{html.escape(url)}"{tip}>{text}</a>'
    return f"<span{tip}>{text}</span>" if tip else text


def citations(evidence) -> Markup:
    """The evidence column: each cited source, one per line."""
    items = evidence if isinstance(evidence, (list, tuple)) else [evidence] if evidence else []
    return Markup("<br>".join(_citation(c) for c in items))


def _advice_html(advice: dict | None) -> list[str]:
    if not advice or "error" in advice:
        return []
    reasons = [[r.get("rule", ""), r.get("reason", ""), citations(r.get("evidence"))]
               for r in advice.get("reasons", [])]
    out = ["<h2>The advice that led here</h2>", f"<p>{html.escape(str(advice.get('decision', '')))}</p>"]
    if reasons:
        out.append(_table(["rule", "reason", "evidence"], reasons))
    grad = advice.get("graduation") or []
    if grad:
        out.append("<ol>" + "".join(f"<li>{html.escape(str(g))}</li>" for g in grad) + "</ol>")
    return out


def run_html(summary: dict, run_dir: Path, out_dir: Path) -> str:
    figs = [plots.loss_curves({summary["method"]: run_dir}, out_dir / "loss_curves.png")]
    if summary.get("retention"):
        figs.append(plots.retention_bars({summary["method"]: summary["retention"]}, out_dir / "retention.png"))
    keys = ["method", "base", "status", "steps", "epochs", "lr", "trainable_params", "total_params", "train_time_s",
            "tokens_per_s", "peak_rss_mb", "final_train_loss", "final_eval_loss", "train_eval_gap"]
    table = _table(["field", "value"], [[k, summary.get(k)] for k in keys], "comparison")
    events = _table(["step", "guard", "message"], [[e["step"], e["guard"], e["message"]]
                                                   for e in summary.get("guard_events", [])])
    cfg = RunDir(run_dir).config_text() or ""
    title = f"tunewise run: {summary['method']} on {summary['base']}"
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Summary</h2>", table, "<h2>Guard events</h2>", events,
             "<h2>Plots</h2>", *(_img(f) for f in figs), "<h2>Resolved config</h2>",
             f"<pre>{html.escape(cfg)}</pre>"]
    return _page(title, parts)


def _page(title: str, parts: list[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(path: str | Path) -> Path:
    """report.html (and PNGs) inside a compare directory (compare.json) or a run directory (summary.json)."""
    d = Path(path)
    if not d.is_dir():
        raise TunewiseError(f"'{d}' {'is a file, not a directory' if d.exists() else 'does not exist'}",
                            "point at a directory written by tunewise compare or tunewise train")
    for name, render in (("compare.json", compare_html), (SUMMARY, lambda s, d: run_html(s, d, d))):
        if not (d / name).is_file():
            continue
        try:
            page = render(read_json_file(d / name, name), d)
        except (KeyError, TypeError, AttributeError, IndexError) as e:  # valid JSON without what report needs
            raise TunewiseError(f"{d / name}: not a complete {name} (missing or wrong {e})",
                                "write it again with the command that made it (compare or train)") from None
        break
    else:
        raise TunewiseError(f"'{d}' holds neither compare.json nor summary.json",
                            "point at a directory written by tunewise compare or tunewise train")
    return atomic_write_text(d / "report.html", page)
