"""The one rule for outputs: tunewise writes only into a folder that is new, empty, or that it wrote itself
for the same purpose, and replaces only a file that it marked as its own for the same purpose. Anything else is
refused with the reason, and `--force` where replacing is a real wish.

A folder tunewise writes gets a small `.tunewise` marker saying what it holds (a run, a task, a compare) and for
what (which task, ...). Folders written before the marker existed are recognised by the files that kind always
writes together (a user's own config.yaml alone is not a run).
"""

from __future__ import annotations

import json
from pathlib import Path

from tunewise import rundir
from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_json
from tunewise.userfiles import check_output

MARKER = ".tunewise"
# The files each kind always writes together: how a folder from before the marker is recognised.
SIGNATURE = {"run": (rundir.CONFIG, rundir.METRICS), "task": ("meta.json", "train.jsonl"),
             "compare": ("compare.json", "configs"), "pilot": ("pilot.json", "data"),
             "eval": (rundir.RESULTS, rundir.PREDICTIONS), "merged model": ("merge.json", "config.json"),
             "mitigated adapter": ("mitigation.json", "adapter_config.json")}
# The first line of a text file tunewise may replace (a config advise wrote); files that cannot hold a comment
# (JSONL, GGUF) carry none, so an existing one is replaced only with --force.
FILE_MARK = "# written by tunewise as a {kind}; tunewise may replace it"


def _is_marker(name: str) -> bool:
    """The marker, or the temporary file another process is writing it through (torchrun's ranks all claim the
    same --out; one may see the other's half-written marker), or a writer's lock (rundir.writing)."""
    return name in (MARKER, rundir.LOCK) or (name.startswith(f"{MARKER}.") and name.endswith(".tmp"))


def read_marker(folder: Path) -> dict | None:
    path = folder / MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(marker: dict) -> str:
    what = marker.get("for")
    return f"a {marker.get('kind')}" + (f" of {what}" if what else "")


def claim_dir(folder: str | Path, kind: str, purpose: str | None = None, *, force: bool = False,
              flag: str = "--out") -> Path:
    """Make `folder` ours for `kind` (for `purpose`, e.g. the task name), or refuse: it is not a folder, it holds
    files tunewise did not write, or it holds another kind or purpose. With force=True the folder is taken anyway
    (the caller replaces what it writes; other files are left alone)."""
    return mark_dir(check_dir(folder, kind, purpose, force=force, flag=flag), kind, purpose)


def check_dir(folder: str | Path, kind: str, purpose: str | None = None, *, force: bool = False,
              flag: str = "--out") -> Path:
    """claim_dir's refusal, writing nothing (for a command that checks its output before minutes of work and
    marks it with `mark_dir` when it writes)."""
    folder = check_output(folder, flag, "dir")
    rundir.refuse_if_locked(folder)  # another process is writing it: say who, before anything is written
    marker = {"kind": kind, "for": purpose}
    foreign = sorted(p.name for p in folder.iterdir() if not _is_marker(p.name)) if folder.is_dir() else []
    if foreign and not force:
        found = read_marker(folder)
        if found is None and kind in SIGNATURE and all((folder / name).exists() for name in SIGNATURE[kind]):
            found = {"kind": kind, "for": None}  # written by an older tunewise; its purpose is unknown
        if found is None:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise TunewiseError(f"{flag} '{folder}' is not empty ({shown}) and tunewise did not write it",
                                f"choose a new or empty folder for {flag}, or pass --force to write into it anyway")
        if found.get("kind") != kind or (purpose and found.get("for") and found.get("for") != purpose):
            raise TunewiseError(f"{flag} '{folder}' holds {_describe(found)}; this would replace it with "
                                f"{_describe(marker)}",
                                f"choose another {flag}, or pass --force to replace it")
    return folder


def mark_dir(folder: str | Path, kind: str, purpose: str | None = None) -> Path:
    """Record that tunewise wrote `folder` for `kind` / `purpose` (what claim_dir checks next time)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / MARKER, {"kind": kind, "for": purpose})
    return folder


def file_header(kind: str) -> str:
    """The first line of a text file tunewise writes as `kind` and may replace later (a YAML / shell comment)."""
    return FILE_MARK.format(kind=kind) + "\n"


def check_file(path: str | Path, kind: str, *, force: bool = False, flag: str = "--out") -> Path:
    """Refuse to replace an existing file unless it starts with tunewise's mark for `kind` (or force=True);
    writes nothing."""
    path = check_output(path, flag, "file")
    if path.exists() and not force and not _marked_file(path, kind):
        raise TunewiseError(f"{flag} '{path}' already exists and tunewise did not write it as a {kind}",
                            f"choose a new file for {flag}, or pass --force to replace it")
    return path


def _marked_file(path: Path, kind: str) -> bool:
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
    except OSError:
        return False
    return first.decode("utf-8", "replace").rstrip("\r\n") == FILE_MARK.format(kind=kind)
