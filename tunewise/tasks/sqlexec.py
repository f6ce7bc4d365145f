"""Run model-written SQL safely and compare result sets (execution accuracy).

Safety: the database is opened read-only through a URI (`mode=ro`), an authorizer allows reads only (no ATTACH,
no PRAGMA, no writes), `execute` accepts one statement only, a progress handler bounds the work of each query
(a cross join of big tables cannot hang the evaluation), and at most MAX_ROWS rows are fetched.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import TunewiseError

MAX_STEPS = 2_000_000  # SQLite VM instructions per query (progress handler ticks x PROGRESS_EVERY)
PROGRESS_EVERY = 1000
MAX_ROWS = 10_000

_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)
_STRING = re.compile(r"'(?:[^']|'')*'")


@dataclass(frozen=True)
class QueryResult:
    rows: list[tuple] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _authorizer(action: int, *_args) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection, or a TunewiseError naming the file when it is missing or not SQLite."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TunewiseError(f"SQLite database '{p}' does not exist",
                            "pass --db with the database the queries run on (the sql task writes db.sqlite)")
    try:
        conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
        conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        raise TunewiseError(f"'{p}' cannot be read as a SQLite database ({e})",
                            "pass a SQLite 3 file (sqlite3 FILE '.tables' should list its tables)") from e
    conn.set_authorizer(_authorizer)
    return conn


def run_query(conn: sqlite3.Connection, sql: str, max_steps: int = MAX_STEPS) -> QueryResult:
    """Execute one statement with bounded work; errors come back as text, never raised."""
    sql = sql.strip()
    if not sql:
        return QueryResult(None, "empty query")
    ticks = 0
    limit = max(1, max_steps // PROGRESS_EVERY)

    def progress() -> int:
        nonlocal ticks
        ticks += 1
        return 1 if ticks > limit else 0  # non-zero interrupts the query

    conn.set_progress_handler(progress, PROGRESS_EVERY)
    try:
        cur = conn.execute(sql)
        rows = cur.fetchmany(MAX_ROWS + 1)
    except sqlite3.OperationalError as e:
        if ticks > limit:
            return QueryResult(None, f"query ran past {max_steps} SQLite steps (interrupted)")
        return QueryResult(None, f"sqlite: {e}")
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as e:
        # ProgrammingError for several statements, Warning on some versions, ValueError for NUL bytes.
        return QueryResult(None, f"sqlite: {e}")
    finally:
        conn.set_progress_handler(None, PROGRESS_EVERY)
    if len(rows) > MAX_ROWS:
        return QueryResult(None, f"query returned more than {MAX_ROWS} rows")
    return QueryResult([tuple(r) for r in rows])


def has_order_by(sql: str) -> bool:
    """ORDER BY outside string literals: then row order is part of the answer."""
    return bool(_ORDER_BY.search(_STRING.sub("''", sql)))


def _norm_value(v):
    if isinstance(v, float):
        return round(v, 6)  # AVG() on the same rows may differ in the last bits between query shapes
    if isinstance(v, bytes):
        return v.hex()
    return v


def normalise_rows(rows: list[tuple]) -> list[tuple]:
    return [tuple(_norm_value(v) for v in r) for r in rows]


def same_result(predicted: list[tuple], reference: list[tuple], ordered: bool) -> bool:
    """Equal result sets: as multisets of rows, or as sequences when the reference orders its rows.

    Column names are ignored (SELECT name vs SELECT name AS n is the same answer), values compared after
    rounding floats; 2 and 2.0 are equal as in Python.
    """
    p, r = normalise_rows(predicted), normalise_rows(reference)
    return p == r if ordered else Counter(p) == Counter(r)
