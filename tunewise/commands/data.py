"""`tunewise data check`: audit a training file before training (schema, duplicates, lengths, labels, leakage)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

data_app = typer.Typer(help="Audit training data before you train on it.", no_args_is_help=True)

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
    force: bool = typer.Option(False, "--force", help="With --fix, replace a file that already exists."),
) -> None:
    """Check a dataset: schema (every problem as file:line: field: what), exact / near duplicates, conflicts,
    token lengths, class balance, structured-output validity, eval leakage, skill coverage and a verdict.

    Exit code: 0 clean, 1 warnings, 2 errors (so it can gate CI).
    """
    from tunewise.data.audit import AuditOptions, audit, write_fixed
    from tunewise.data.records import canonical_format

    canonical_format(fmt)  # an unknown --format is refused before the pass over the data

    if fix is not None:
        _check_fix(fix, path, force)  # before the audit, which can take minutes
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


def _check_fix(fix: Path, path: Path, force: bool) -> None:
    """--fix is never the input, and replaces an existing file only with --force (a JSONL carries no mark)."""
    from tunewise.errors import TunewiseError
    from tunewise.ownership import check_file

    if fix.resolve() == path.resolve():
        raise TunewiseError(f"--fix '{fix}' is the input file; the input is never modified",
                            "give --fix a new file, e.g. clean.jsonl")
    check_file(fix, "cleaned dataset", force=force, flag="--fix")


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


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
