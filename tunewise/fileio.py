"""Atomic writes: a crash mid-write never leaves a half-written file in place.

matplotlib is imported inside atomic_save_figure: only the commands that draw pay for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# The process umask, read once at import (os.umask can only be read by setting it, so set it straight back).
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the final file gets the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """`obj` with every non-finite float (nan, inf, -inf) replaced by None, through dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _plain(obj: Any) -> Any:
    """What JSON cannot hold directly: a number type (numpy, a one-element tensor) as a finite float or None,
    anything else (a Path, a date) as its text."""
    if not isinstance(obj, str) and hasattr(obj, "__float__"):
        try:
            return json_safe(float(obj))
        except (TypeError, ValueError):
            pass
    return str(obj)


def to_json(obj: Any, **options: Any) -> str:
    """The one JSON encoder for what tunewise writes: strict JSON that any reader takes. NaN / Infinity are not
    JSON, so a non-finite number is written as null (a diverged loss reads as "no value", never as a number)."""
    return json.dumps(json_safe(obj), allow_nan=False, default=_plain, **options)


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, to_json(obj, indent=indent, sort_keys=False) + "\n")


def atomic_save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write and close a matplotlib figure; the PNG appears whole or not at all."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return path


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> Path:
    """Move a fully written temporary directory into place; the old one is removed only afterwards."""
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    old = final_dir.with_name(f".{final_dir.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old.exists():
        shutil.rmtree(old)
    return final_dir


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and flush it (metrics logs: a crash loses at most the line being written)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(to_json(record) + "\n")
        f.flush()


def cache_root() -> Path:
    """Where tunewise keeps what it can rebuild (converted bases, probe sets, SVDs): $TUNEWISE_CACHE, else
    ~/.cache/tunewise."""
    root = os.environ.get("TUNEWISE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "tunewise"


def sha256_file(path: str | Path) -> str:
    """The full sha256 of a file, read in blocks (model weights do not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: str | Path) -> str:
    """A short sha256 of a file's bytes ('-' when it does not exist): the key of caches built from that file."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "-"
