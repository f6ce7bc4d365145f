"""`tunewise data check`: audit a training file before training (schema, duplicates, lengths, labels, leakage);
`tunewise data select`: keep the k best and most varied records.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunewise.data.records import canonical_format
from tunewise.defaults import TINY_BASE
from tunewise.errors import TunewiseError
from tunewise.userfiles import check_output

data_app = typer.Typer(help="Audit training data before you train on it, and select a curated subset.",
                       no_args_is_help=True)

_STATUS = {0: "[green]ok[/]", 1: "[yellow]warning[/]", 2: "[red]error[/]"}


@data_app.command("check")
def check(
    path: Path | None = typer.Argument(None, help="Training data: a .jsonl (streamed), .json, .csv or .parquet "
                                                  "file, a save_to_disk folder or a dataset id (default: --config's "
                                                  "data.train)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="A run config: its base, data.train, "
                                                                    "data.eval, data.max_seq_len, format, split "
                                                                    "and columns are the defaults here."),
    eval_path: Path | None = typer.Option(None, "--eval", help="Evaluation data: report exact / near overlap."),
    fmt: str | None = typer.Option(None, "--format", help="Record format: auto, alpaca, sharegpt, messages, "
                                                          "prompt_completion or text (as data.format)."),
    split: str | None = typer.Option(None, "--split", help="Split of a dataset id or DatasetDict folder."),
    eval_split: str = typer.Option("validation", "--eval-split", help="Split of the --eval dataset."),
    model: str | None = typer.Option(None, "--model", help="Tokenizer and context for token lengths: the base "
                                                           "you train ('tiny', 'smollm2', a folder, a hub id; "
                                                           "'none' skips lengths). Default: --config's base, "
                                                           "else tiny."),
    max_seq_len: int | None = typer.Option(None, "--max-seq-len", min=1, help="Count examples this limit "
                                                                              "truncates (default: --config's "
                                                                              "data.max_seq_len, else the "
                                                                              "trainer's default)."),
    preserve: str = typer.Option("", "--preserve", help="Skills the base has and must keep, comma-separated: "
                                                         "arithmetic, math, sql, json, code, lm, or NAME=REGEX."),
    output_format: str = typer.Option("auto", "--output-format", help="Declared target format: auto, json, mr "
                                                                      "(act(slot[value], ...)), sql or none."),
    near_threshold: float = typer.Option(0.8, "--near-threshold", min=0.1, max=1.0,
                                         help="Jaccard of word 3-grams above which two records are near duplicates."),
    fix: Path | None = typer.Option(None, "--fix", help="Write a cleaned JSONL copy here (the input is never "
                                                        "modified): drops invalid, empty and exact-duplicate "
                                                        "records, and training records that are in --eval."),
    drop_near: bool = typer.Option(False, "--drop-near", help="With --fix, also keep only the first record of "
                                                              "each near-duplicate cluster, and drop training "
                                                              "records near-identical to an --eval record."),
    exact_lengths: bool = typer.Option(False, "--exact-lengths", help="Tokenise every record for the length "
                                                                       "distribution (default: a 20k sample; "
                                                                       "truncation counts are always exact)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    show: int = typer.Option(20, "--show", min=0, help="How many per-line problems to print."),
    force: bool = typer.Option(False, "--force", help="With --fix, replace a file that already exists."),
) -> None:
    """Check a dataset: schema (every problem as file:line: field: what), exact / near duplicates, conflicts,
    token lengths against the model's tokenizer and context, class balance, structured-output validity, eval
    leakage, skill coverage and a verdict.

    Exit code: 0 clean, 1 warnings, 2 errors (so it can gate CI).
    """
    from tunewise.data.audit import audit

    opts, path = _options(path, config, eval_path, fmt, split, eval_split, model, max_seq_len, preserve,
                          output_format, near_threshold, exact_lengths)
    canonical_format(opts.fmt)  # an unknown --format is refused before the pass over the data
    if fix is not None:
        _check_fix(fix, path, opts.eval_path, force)  # before the audit, which can take minutes
    report = audit(path, opts)
    _fix(report, path, fix, opts, drop_near)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        render(report, show)
    raise typer.Exit(report["exit_code"])


def _options(path, config, eval_path, fmt, split, eval_split, model, max_seq_len, preserve, output_format,
             near_threshold, exact_lengths):
    """AuditOptions and the data path: the flags, else the run config's values, else the trainer's defaults
    (so `data check --config run.yaml` checks what `train run.yaml` will train on, with its base's tokenizer)."""
    from tunewise.config import DataConfig, load_run_config
    from tunewise.data.audit import AuditOptions

    cfg = load_run_config(config) if config is not None else None
    data = cfg.data if cfg is not None else None
    if path is None:
        if data is None or not isinstance(data.train, str):
            raise TunewiseError("no data to check" if data is None else f"{config}: data.train is a mix of sources",
                                "give the data file: tunewise data check DATA [--config run.yaml]")
        path = Path(data.train)
    if eval_path is None and data is not None and isinstance(data.eval, str):
        eval_path = Path(data.eval)
    model = model or (cfg.base if cfg is not None else TINY_BASE)
    default_len = data.max_seq_len if data is not None else DataConfig.model_fields["max_seq_len"].default
    return AuditOptions(eval_path=str(eval_path) if eval_path else None,
                        model=None if model.lower() == "none" else model, max_seq_len=max_seq_len or default_len,
                        preserve=[s.strip() for s in preserve.split(",") if s.strip()],
                        output_format=output_format, near_threshold=near_threshold,
                        length_sample=0 if exact_lengths else 20_000,
                        fmt=fmt or (data.format if data is not None else "auto"),
                        split=split or (data.split if data is not None else "train"), eval_split=eval_split,
                        columns=(data.columns or None) if data is not None else None), path


def _fix(report: dict, path: Path, fix: Path | None, opts, drop_near: bool) -> None:
    """With --fix, the cleaned copy (its counts in report['fix']); the report's private line sets are removed."""
    from tunewise.data.audit import write_fixed

    redundant = report.pop("_near_redundant_lines")
    leaked, near_leaked = report.pop("_leaked_lines"), report.pop("_near_leaked_lines")
    if fix is not None:
        report["fix"] = write_fixed(path, fix, redundant if drop_near else None, fmt=opts.fmt, split=opts.split,
                                    leaked_lines=leaked | (near_leaked if drop_near else set()),
                                    columns=opts.columns)


def _check_fix(fix: Path, path: Path, eval_path: str | None, force: bool) -> None:
    """--fix writes a new file: never the input or the eval file, where tunewise may write, and replaces an existing
    file only with --force (a JSONL carries no mark)."""
    from tunewise.ownership import check_file

    check_output(fix, "--fix", "file")
    for what, other in (("input", path), ("--eval file", eval_path)):
        if other is not None and fix.resolve() == Path(other).resolve():
            raise TunewiseError(f"--fix '{fix}' is the {what}; the input is never modified",
                                "give --fix a new file, e.g. clean.jsonl")
    check_file(fix, "cleaned dataset", force=force, flag="--fix")


def _row(table, check: str, result: str, status: int) -> None:
    table.add_row(check, result, _STATUS[status])


def _status(report: dict, check: str) -> int:
    sev = {f["severity"] for f in report["findings"] if f["check"] == check}
    return 2 if "error" in sev else 1 if "warning" in sev else 0


def _eg(pairs: list, sep: str, k: int = 3) -> str:
    """' (lines 12=3, 40=7)' from [[line, other line, ...], ...] (the first k), or '' when there are none."""
    if not pairs:
        return ""
    shown = ", ".join(f"{p[0]}{sep}{p[1]}" for p in pairs[:k])
    return f" (lines {shown}{', ...' if len(pairs) > k else ''})"


def _lines(lines: list, k: int = 5) -> str:
    """' (lines 3, 9, ...)' or '' when there are none."""
    if not lines:
        return ""
    return f" (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines[:k]))}{', ...' if len(lines) > k else ''})"


def render(r: dict, show: int) -> None:
    con = Console()
    t = Table(title=f"tunewise data check: {escape(r['file'])}")
    t.add_column("check")
    t.add_column("result")
    t.add_column("status")
    for check, result, status in _rows(r):
        _row(t, check, escape(result), status)
    con.print(t)
    from tunewise.data.audit import problem_lines

    sch = r["schema"]
    lines = problem_lines(r)
    for line in lines[:show]:
        con.print(escape(line), highlight=False, soft_wrap=True)  # one greppable line per problem
    more = sch["errors"] + sch["warnings"] - min(show, len(lines))
    if more > 0:
        con.print(f"... and {more} more problem(s) (--show N, or --json)")
    for f in r["findings"]:
        color = "red" if f["severity"] == "error" else "yellow"
        con.print(f"[{color}]{f['severity']}[/] [{f['check']}] {escape(f['message'])}", highlight=False)
    v = r["verdict"]
    con.print(f"[bold]verdict: {v['code']}[/] - {escape(v['message'])}", highlight=False)
    if "fix" in r:
        fx = r["fix"]
        con.print(f"wrote {escape(fx['out'])}: kept {fx['kept']}, dropped {fx['dropped_invalid']} invalid, "
                  f"{fx['dropped_exact_duplicates']} exact duplicates, {fx['dropped_near_duplicates']} near "
                  f"duplicates, {fx['dropped_leaked']} in the eval set", highlight=False)


def _rows(r: dict) -> list[tuple[str, str, int]]:
    """The table's rows (check, result, status); every finding about records names their lines."""
    rec, sch, d = r["records"], r["schema"], r["duplicates"]
    shapes = ", ".join(f"{k} {v}" for k, v in rec["shapes"].items()) or "none"
    bad = sorted({p["line"] for p in r["problems"] if p["severity"] == "error" and p["line"]})
    rows = [("records", f"{rec['valid']} valid ({shapes}), {rec['invalid']} invalid", _status(r, "size")),
            ("schema", f"{sch['errors']} errors, {sch['warnings']} warnings{_lines(bad)}",
             2 if sch["errors"] else 1 if sch["warnings"] else 0),
            ("duplicates", f"{d['exact']} exact{_eg(d['exact_examples'], '=')}, {d['near']['near_duplicates']} "
                           f"near{_eg(d['near']['examples'], '~')} at J >= {d['near']['threshold']} in "
                           f"{d['near']['clusters']} clusters", _status(r, "duplicates")),
            ("conflicts", f"{d['conflicts']['prompts']} prompts with different answers in "
                          f"{d['conflicts']['records']} records{_eg(d['conflicts']['examples'], ' vs ')}",
             _status(r, "conflicts"))]
    if r["length"] and r["length"].get("examples"):
        rows.append(_length_row(r["length"], _status(r, "length")))
    if r["labels"]:
        lab = r["labels"]
        top = ", ".join(f"{k} {v}" for k, v in list(lab["counts"].items())[:6])
        rows.append(("labels", f"{lab['classes']} classes ({top}); imbalance {lab['imbalance_ratio']}:1",
                     _status(r, "labels")))
    if r["structured"]:
        s = r["structured"]
        rows.append(("targets", f"{s['valid']}/{s['targets']} valid {s['format']} ({100 * s['valid_share']:.1f}%)"
                                f"{_lines([line for line, _ in s['invalid_examples']])}", _status(r, "structured")))
    if r["leakage"]:
        lk = r["leakage"]
        rows.append(("eval leakage", f"{lk['exact']} exact{_eg(lk['exact_examples'], '=')}, {lk['same_prompt']} "
                                     f"same prompt{_eg(lk['same_prompt_examples'], '=')}, {lk['near']} near"
                                     f"{_eg(lk['near_examples'], '~')} of {lk['eval_records']} eval records "
                                     f"({lk['eval_unique']} distinct; lines as eval=train)", _status(r, "leakage")))
    if r["skills"]:
        sk = ", ".join(f"{k} {v['examples']} ({100 * v['share']:.1f}%)" for k, v in r["skills"]["skills"].items())
        rows.append(("skills", sk or "none recognised", _status(r, "skills")))
    return rows


def _length_row(L: dict, status: int) -> tuple[str, str, int]:
    sampled = "" if L["sampled"] == L["examples"] else f" (distribution of a {L['sampled']}-record sample)"
    ctx = f"; {L['over_context']} over its context {L['context']}{_lines(L.get('over_context_lines'))}" \
        if L.get("context") else "; its context is unknown"
    return (f"tokens ({L['model']})", f"p50 {L['p50']}, p90 {L['p90']}, p99 {L['p99']}, max {L['max']}; "
                                      f"{L['truncated']} over max_seq_len {L['max_seq_len']}"
                                      f"{_lines(L['truncated_lines'])}, {L['no_labels_left']} lose every target"
                                      f"{_lines(L['no_labels_lines'])}{ctx}{sampled}", status)


@data_app.command("select")
def select(
    path: Path = typer.Argument(..., help="Training data, in any format train reads (the input is only read)."),
    k: int = typer.Option(..., "--k", help="How many records to keep."),
    out: Path = typer.Option(..., "--out", help="The subset, in the input's format (by --out's suffix); "
                                                "OUT.select_report.json and .html are written beside it."),
    base: str = typer.Option("tiny", "--base", help="The model that scores the records (IFD, answer loss, prompt "
                                                     "embeddings): the base you will fine-tune."),
    test: Path | None = typer.Option(None, "--test", help="Test data: records it also holds are left out."),
    by: str = typer.Option("quality,diversity", "--by", help="quality (drop the worst IFD share), diversity "
                                                             "(k-center on prompt embeddings), or both."),
    drop_share: float = typer.Option(0.25, "--drop-share", min=0.0, max=0.95,
                                     help="With quality and diversity: the worst-scored share dropped first."),
    fmt: str = typer.Option("auto", "--format", help="Record format, as data.format."),
    split: str = typer.Option("train", "--split", help="Split of a dataset id or DatasetDict folder."),
    force: bool = typer.Option(False, "--force", help="Replace an --out that tunewise did not write."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Keep the k best and most varied records: leave out what data check knows is bad (duplicates, conflicts,
    empty or truncated answers, test leakage), score the rest with the base (IFD = loss(answer | prompt) /
    loss(answer)), drop the worst-scored share, then pick for coverage and diversity. Every record left out
    gets its reason in the report. Workflow: data check -> data select -> advise -> train."""
    from tunewise.evaluate.select_report import write_selection
    from tunewise.evaluate.select_run import SelectOptions, choose, parse_by, preflight

    canonical_format(fmt)
    opts = SelectOptions(k=k, base=base, test=str(test) if test else None, by=parse_by(by), drop_share=drop_share,
                         fmt=fmt, split=split, force=force, progress=not as_json)
    preflight(path, out, opts)
    report = write_selection(path, out, choose(path, opts), opts)
    if as_json:
        typer.echo(json.dumps({k: v for k, v in report.items() if k != "record_scores"}, indent=2))
        return
    reasons = ", ".join(f"{n} {r}" for r, n in report["left_out_by_reason"].items())
    typer.echo(f"kept {report['kept']} of {report['records']} records in {out}; left out: {reasons or 'none'}")
    if report["near_duplicates_readmitted"]:
        typer.echo(f"--k {k} is more than the distinct records left, so {report['near_duplicates_readmitted']} near "
                   "duplicates came back as candidates (the diversity pick chose among them)")
    if report["uncovered"]:
        typer.echo(f"not represented (--k too small): {', '.join(report['uncovered'])}")
    typer.echo(f"why each record was left out: {report['report_files'][0]} (page: {report['report_files'][1]})")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
