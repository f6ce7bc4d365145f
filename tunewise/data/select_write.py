"""Writing the records `data select` kept, in the input's own format, and the rule for replacing its --out.

A JSONL input's kept lines are copied byte for byte; other inputs are re-read through the one reader
(sources.iter_source) and the kept rows written as the output's suffix says (.jsonl, .json, .csv, .tsv,
.parquet; another suffix gets the input's kind). The input is only ever read.

pyarrow is imported only for a .parquet input.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tunewise.data.audit_readers import JSONL_SUFFIXES, KNOWN_SUFFIXES, detect_kind
from tunewise.data.sources import iter_source
from tunewise.errors import TunewiseError
from tunewise.fileio import sha256_file
from tunewise.userfiles import check_output

TOOL = "tunewise data select"


def report_paths(out: Path) -> tuple[Path, Path]:
    """select_report.json and its HTML page, next to the subset and named after it."""
    return out.with_name(f"{out.stem}.select_report.json"), out.with_name(f"{out.stem}.select_report.html")


def check_out(out: Path, data: Path, force: bool) -> None:
    """Refuse an --out that is the input, or a file tunewise did not write (its report must name it, with the
    same digest), unless --force; checked before any work."""
    check_output(out, "--out", "file")
    if data.exists() and out.exists() and out.resolve() == data.resolve():
        raise TunewiseError(f"--out '{out}' is the input file; the input is never modified",
                            "give --out a new file, e.g. selected.jsonl")
    report, page = report_paths(out)
    for path in (out, report, page):
        if not path.exists() or force:
            continue
        ours = False
        try:
            written = json.loads(report.read_text(encoding="utf-8"))
            ours = written.get("tool") == TOOL and (path != out or written.get("out_sha256") == sha256_file(out))
        except (OSError, ValueError, AttributeError):
            pass
        if not ours:
            raise TunewiseError(f"'{path}' exists and tunewise data select did not write it",
                                "choose another --out, or pass --force to replace it")


def out_kind(out: Path, data: Path) -> str:
    suffix = out.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in KNOWN_SUFFIXES:
        return suffix[1:]
    return detect_kind(data) if data.is_file() else "jsonl"


def subset_bytes(data: Path, out: Path, keep: set[int], split: str = "train") -> tuple[str, bytes]:
    """(kind, file content) of the rows of `data` whose line is in `keep`, in the kind `out` asks for."""
    kind = out_kind(out, data)
    if kind == "jsonl" and data.is_file() and detect_kind(data) == "jsonl":
        return kind, _jsonl_lines(data, keep)
    rows = [row.obj for row in iter_source(data, split) if row.problem is None and row.line in keep]
    return kind, _encode(rows, kind)


def _jsonl_lines(data: Path, keep: set[int]) -> bytes:
    parts = []
    with open(data, "rb") as f:
        for n, raw in enumerate(f, start=1):  # physical lines, as audit_readers numbers them
            if n in keep:
                parts.append(raw if raw.endswith(b"\n") else raw + b"\n")
    return b"".join(parts)


def _encode(rows: list[dict], kind: str) -> bytes:
    if kind == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    if kind == "json":
        return (json.dumps(rows, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buf)
        return buf.getvalue()
    columns = list(dict.fromkeys(k for r in rows for k in r))
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t" if kind == "tsv" else ",", lineterminator="\n")
    writer.writerow(columns)
    for r in rows:  # a messages list goes in as JSON, as the CSV reader expects it
        writer.writerow([json.dumps(r[c], ensure_ascii=False) if isinstance(r.get(c), (list, dict))
                         else r.get(c, "") for c in columns])
    return text.getvalue().encode("utf-8")
