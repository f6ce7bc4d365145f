"""Defensive, streaming file readers: every row comes back with its line number, bad rows as problems.

These are the local-file half of the one reader, tunewise.data.sources.iter_source. They never raise on bad
content: a row that cannot be read is yielded as a RawRow with `problem` set, so the audit can report every
broken line (the trainer, through formats.read_records, stops at the first). JSONL is read in binary one line
at a time with a length cap, so invalid UTF-8, NUL bytes and gigantic lines are reported with their line numbers
and memory stays bounded.

Line numbers are the same for the trainer and the audit (one reader): 1-based physical line for JSONL, data
row + 1 (the header is line 1) for CSV, 1-based record index for JSON and Parquet.

pyarrow is imported only for a .parquet file: the other readers stay light.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError

MAX_LINE_BYTES = 32 * 2**20  # a longer JSONL line is reported and skipped, never held whole in memory
JSONL_SUFFIXES = (".jsonl", ".ndjson")
KNOWN_SUFFIXES = (*JSONL_SUFFIXES, ".json", ".csv", ".tsv", ".parquet")


@dataclass
class RawRow:
    line: int
    obj: Any = None
    problem: str | None = None  # set when the row could not be parsed; obj is then None
    code: str = ""


def detect_kind(path: Path) -> str:
    """'jsonl' | 'json' | 'csv' | 'tsv' | 'parquet', from the suffix, else from the first bytes."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in KNOWN_SUFFIXES:
        return suffix[1:]
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{") or not stripped:
        return "jsonl"
    raise TunewiseError(f"{path}: cannot tell the file type from '{suffix or 'no suffix'}' or its first bytes",
                        "name it .jsonl, .json, .csv or .parquet")


def iter_rows(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[RawRow]:
    path = Path(path)
    if not path.exists():
        raise TunewiseError(f"data file '{path}' does not exist", "check the path")
    if not path.is_file():
        raise TunewiseError(f"'{path}' is not a file", "give a .jsonl, .json, .csv or .parquet file")
    kind = detect_kind(path)
    if kind == "jsonl":
        yield from iter_jsonl(path, max_line_bytes)
    elif kind == "json":
        yield from iter_json(path)
    elif kind in ("csv", "tsv"):
        yield from iter_csv(path, delimiter="\t" if kind == "tsv" else ",")
    else:
        yield from iter_parquet(path)


def _read_capped_line(f: io.BufferedReader, cap: int) -> tuple[bytes, bool]:
    """One line (without reading more than cap+1 bytes into memory); (bytes, too_long). b'' at EOF."""
    line = f.readline(cap + 1)
    if len(line) <= cap or line.endswith(b"\n"):
        return line, False
    while True:  # skip the rest of an overlong line in bounded chunks
        chunk = f.readline(1 << 20)
        if not chunk or chunk.endswith(b"\n"):
            return line[:cap], True


def decode_jsonl_line(raw: bytes, n: int) -> RawRow | None:
    """Parse one JSONL line; None for a blank line (skipped, as the trainer does)."""
    if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 BOM some editors write
    nul = raw.find(b"\x00")
    if nul >= 0:
        return RawRow(n, problem=f"NUL byte at column {nul + 1}; remove it (JSON text never contains raw NUL)",
                      code="nul-byte")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RawRow(n, problem=f"invalid UTF-8 at byte {e.start + 1} ({raw[e.start:e.start + 4]!r}); "
                                 "re-save the file as UTF-8", code="invalid-utf8")
    if not text.strip():
        return None
    text = text.rstrip("\r\n")  # so that error columns count within this line
    try:
        return RawRow(n, obj=json.loads(text))
    except json.JSONDecodeError as e:
        return RawRow(n, problem=f"not valid JSON ({e.msg} at column {e.pos + 1}); fix or remove the line",
                      code="invalid-json")
    except RecursionError:
        return RawRow(n, problem="JSON nested too deeply to parse; flatten the record", code="too-deep")
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        return RawRow(n, problem=f"not valid JSON ({e}); fix or remove the line", code="invalid-json")


def iter_jsonl(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[RawRow]:
    with open(path, "rb") as f:
        n = 0
        while True:
            raw, too_long = _read_capped_line(f, max_line_bytes)
            if not raw:
                return
            n += 1
            if too_long:
                yield RawRow(n, problem=f"line longer than {max_line_bytes} bytes; split or shorten the record",
                             code="line-too-long")
                continue
            row = decode_jsonl_line(raw, n)
            if row is not None:
                yield row


def iter_json(path: Path) -> Iterator[RawRow]:
    """A .json file holds one list of records; it cannot be streamed, so it is parsed whole (as the trainer does)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        yield RawRow(line, problem=f"invalid UTF-8 at byte {e.start + 1}; re-save the file as UTF-8",
                     code="invalid-utf8")
        return
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        yield RawRow(e.lineno, problem=f"not valid JSON ({e.msg} at column {e.colno}); fix the file",
                     code="invalid-json")
        return
    except (RecursionError, ValueError) as e:
        yield RawRow(1, problem=f"cannot parse the JSON ({type(e).__name__}); fix the file", code="invalid-json")
        return
    if not isinstance(data, list):
        yield RawRow(1, problem=f"a .json file must hold a list of records (got a {type(data).__name__}); "
                                "for one record per line use .jsonl", code="not-a-list")
        return
    for i, obj in enumerate(data):
        yield RawRow(i + 1, obj=obj)


def _utf8_lines(path: Path) -> Iterator[str]:
    # surrogateescape keeps bad bytes as lone surrogates, so a row with invalid UTF-8 is found and reported
    with open(path, "rb") as f:
        for raw in f:
            yield raw.decode("utf-8", errors="surrogateescape")


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def iter_csv(path: Path, delimiter: str = ",") -> Iterator[RawRow]:
    """CSV columns prompt/completion, text, or messages (a JSON string); row n+1 (the header is line 1)."""
    lines = _utf8_lines(path)
    first = next(lines, None)
    if first is None:
        return
    first = first.lstrip("\ufeff")
    reader = csv.reader(_chain(first, lines), delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as e:
        yield RawRow(1, problem=f"unreadable CSV header ({e})", code="invalid-csv")
        return
    n = 1
    while True:
        n += 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield RawRow(n, problem=f"unreadable CSV row ({e}); fix the quoting", code="invalid-csv")
            return  # the csv module cannot resynchronise after a broken quote
        if not values:
            continue
        if any("\x00" in v for v in values):
            yield RawRow(n, problem="NUL byte in the row; remove it", code="nul-byte")
            continue
        if any(_has_surrogate(v) for v in values):
            yield RawRow(n, problem="invalid UTF-8 in the row; re-save the file as UTF-8", code="invalid-utf8")
            continue
        if len(values) != len(header):
            yield RawRow(n, problem=f"{len(values)} columns but the header has {len(header)}; fix the quoting",
                         code="invalid-csv")
            continue
        obj: dict[str, Any] = dict(zip(header, values, strict=True))
        if isinstance(obj.get("messages"), str):  # chat in CSV: the messages column holds JSON
            try:
                obj["messages"] = json.loads(obj["messages"])
            except (ValueError, RecursionError):
                pass  # left as a string; the schema check reports it as the wrong type
        yield RawRow(n, obj=obj)


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def iter_parquet(path: Path, batch_size: int = 4096) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types (ArrowInvalid, OSError) for a corrupt file
        yield RawRow(1, problem=f"unreadable Parquet file ({type(e).__name__}: {str(e)[:120]})",
                     code="invalid-parquet")
        return
    n = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        for obj in batch.to_pylist():
            n += 1
            yield RawRow(n, obj=obj)
