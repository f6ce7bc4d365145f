"""`tunewise data check`: audit a training file before training (schema, duplicates, lengths, labels, leakage);
`tunewise data select`: keep the k best and most varied records."""

from __future__ import annotations

import json
from pathlib import Path

import typer

data_app = typer.Typer(help="Audit training data before you train on it, and select a curated subset.",
                       no_args_is_help=True)

_STATUS = {0: "[green]ok[/]", 1: "[yellow]warning[/]", 2: "[red]error[/]"}


@data_app.command("check")
def check(
    path: Path = typer.Argument(..., help="Training data: a .jsonl (streamed), .json, .csv or .parquet file, a "
                                          "save_to_disk folder or a dataset id."),
    eval_path: Path | None = typer.Option(None, "--eval", help="Evaluation data: report exact / near overlap."),
    fmt: str = typer.Option("auto", "--format", help="Record format: auto, alpaca, sharegpt, messages, "
                                                     "prompt_completion or text (as data.format)."),
    split: str = typer.Option("train", "--split", help="Split of a dataset id or DatasetDict folder."),
    eval_split: str = typer.Option("validation", "--eval-split", help="Split of the --eval dataset."),
    model: str = typer.Option("tiny", "--model", help="Tokenizer for token lengths ('tiny', a folder, a hub id; "
                                                       "'none' skips lengths)."),
    max_seq_len: int = typer.Option(256, "--max-seq-len", min=1, help="Count examples this limit truncates."),
    preserve: str = typer.Option("", "--preserve", help="Skills the base has and must keep, comma-separated: "
                                                         "arithmetic, math, sql, json, code, lm, or NAME=REGEX."),
    output_format: str = typer.Option("auto", "--output-format", help="Declared target format: auto, json, mr "
                                                                      "(act(slot[value], ...)), sql or none."),
    near_threshold: float = typer.Option(0.8, "--near-threshold", min=0.1, max=1.0,
                                         help="Jaccard of word 3-grams above which two records are near duplicates."),
    fix: Path | None = typer.Option(None, "--fix", help="Write a cleaned JSONL copy here (the input is never "
                                                        "modified): drops invalid, empty and exact-duplicate records."),
    drop_near: bool = typer.Option(False, "--drop-near", help="With --fix, also keep only the first record of "
                                                              "each near-duplicate cluster."),
    exact_lengths: bool = typer.Option(False, "--exact-lengths", help="Tokenise every record for the length "
                                                                       "distribution (default: a 20k sample; "
                                                                       "truncation counts are always exact)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    show: int = typer.Option(20, "--show", min=0, help="How many per-line problems to print."),
) -> None:
    """Check a dataset: schema (every problem as file:line: field: what), exact / near duplicates, conflicts,
    token lengths, class balance, structured-output validity, eval leakage, skill coverage and a verdict.

    Exit code: 0 clean, 1 warnings, 2 errors (so it can gate CI).
    """
    from tunewise.data.audit import AuditOptions, audit, write_fixed
    from tunewise.data.records import canonical_format

    canonical_format(fmt)  # an unknown --format is refused before the pass over the data

    if fix is not None:
        from tunewise.errors import TunewiseError
        from tunewise.userfiles import check_output

        check_output(fix, "--fix", "file")  # before the audit, which can take minutes
        if fix.resolve() == path.resolve():
            raise TunewiseError(f"--fix '{fix}' is the input file; the input is never modified",
                                "give --fix a new file, e.g. clean.jsonl")
    opts = AuditOptions(eval_path=str(eval_path) if eval_path else None,
                        model=None if model.lower() == "none" else model, max_seq_len=max_seq_len,
                        preserve=[s.strip() for s in preserve.split(",") if s.strip()],
                        output_format=output_format, near_threshold=near_threshold,
                        length_sample=0 if exact_lengths else 20_000, fmt=fmt, split=split,
                        eval_split=eval_split)
    report = audit(path, opts)
    redundant = report.pop("_near_redundant_lines")
    if fix is not None:
        report["fix"] = write_fixed(path, fix, redundant if drop_near else None, fmt=fmt, split=split)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        render(report, show)
    raise typer.Exit(report["exit_code"])


def _row(table, check: str, result: str, status: int) -> None:
    table.add_row(check, result, _STATUS[status])


def _status(report: dict, check: str) -> int:
    sev = {f["severity"] for f in report["findings"] if f["check"] == check}
    return 2 if "error" in sev else 1 if "warning" in sev else 0


def render(r: dict, show: int) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console()
    t = Table(title=f"tunewise data check: {escape(r['file'])}")
    t.add_column("check")
    t.add_column("result")
    t.add_column("status")
    rec, sch = r["records"], r["schema"]
    shapes = ", ".join(f"{k} {v}" for k, v in rec["shapes"].items()) or "none"
    _row(t, "records", f"{rec['valid']} valid ({shapes}), {rec['invalid']} invalid", _status(r, "size"))
    _row(t, "schema", f"{sch['errors']} errors, {sch['warnings']} warnings",
         2 if sch["errors"] else 1 if sch["warnings"] else 0)
    d = r["duplicates"]
    _row(t, "duplicates", f"{d['exact']} exact, {d['near']['near_duplicates']} near (J >= {d['near']['threshold']}, "
                          f"{d['near']['clusters']} clusters)", _status(r, "duplicates"))
    _row(t, "conflicts", f"{d['conflicts']['prompts']} prompts with different answers "
                         f"({d['conflicts']['records']} records)", _status(r, "conflicts"))
    if r["length"] and r["length"].get("examples"):
        L = r["length"]
        sampled = "" if L["sampled"] == L["examples"] else f" (distribution of a {L['sampled']}-record sample)"
        _row(t, "tokens", f"p50 {L['p50']}, p90 {L['p90']}, p99 {L['p99']}, max {L['max']}; {L['truncated']} over "
                          f"{L['max_seq_len']}, {L['no_labels_left']} lose every target{sampled}", _status(r, "length"))
    if r["labels"]:
        lab = r["labels"]
        top = ", ".join(f"{escape(str(k))} {v}" for k, v in list(lab["counts"].items())[:6])
        _row(t, "labels", f"{lab['classes']} classes ({top}); imbalance {lab['imbalance_ratio']}:1",
             _status(r, "labels"))
    if r["structured"]:
        s = r["structured"]
        _row(t, "targets", f"{s['valid']}/{s['targets']} valid {s['format']} ({100 * s['valid_share']:.1f}%)",
             _status(r, "structured"))
    if r["leakage"]:
        lk = r["leakage"]
        _row(t, "eval leakage", f"{lk['exact']} exact, {lk['same_prompt']} same prompt, {lk['near']} near "
                                f"of {lk['eval_records']} eval records ({lk['eval_unique']} distinct)", _status(r, "leakage"))
    if r["skills"]:
        sk = ", ".join(f"{k} {v['examples']} ({100 * v['share']:.1f}%)" for k, v in r["skills"]["skills"].items())
        _row(t, "skills", sk or "none recognised", _status(r, "skills"))
    con.print(t)
    from tunewise.data.audit import problem_lines

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
                  "duplicates", highlight=False)


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
    from tunewise.data.records import canonical_format
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
    if report["uncovered"]:
        typer.echo(f"not represented (--k too small): {', '.join(report['uncovered'])}")
    typer.echo(f"why each record was left out: {report['report_files'][0]} (page: {report['report_files'][1]})")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
