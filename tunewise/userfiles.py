"""Files the user hands us, and places the user asks us to write: checked once, here, with one clear error each.

Every config loader reads through `load_yaml`, so a binary file, a UTF-16 file or broken YAML reads the same
everywhere (file:line, what is wrong, what to do); every command that writes checks its output path with
`check_output` before the work starts, not after an hour of training.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError

_BOMS = [(codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")]

# A size flag above this cannot be meant: generating or holding that many examples would not finish.
MAX_COUNT = 10_000_000


def require_file(path: str | Path, what: str = "file") -> Path:
    """`path` as an existing regular file; a folder is named as a folder, not as missing."""
    path = Path(path)
    if path.is_dir():
        raise TunewiseError(f"{what} '{path}' is a directory, not a file", f"give the path of the {what} itself")
    if not path.exists():
        raise TunewiseError(f"{what} '{path}' does not exist", "check the path")
    return path


def read_user_text(path: str | Path, what: str = "file") -> str:
    """The text of a user's file as UTF-8 (a UTF-8 BOM is dropped); UTF-16/32 and binary files are named as such."""
    path = require_file(path, what)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TunewiseError(f"{what} '{path}' cannot be read ({e.strerror})", "check its permissions") from None
    for bom, name in _BOMS:  # UTF-32-LE starts with the UTF-16-LE BOM, so UTF-32 is tried first
        if raw.startswith(bom):
            raise TunewiseError(f"{path}: the file is {name} text; tunewise reads UTF-8",
                                f"convert it, e.g. iconv -f {name} -t UTF-8 {path} > converted")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TunewiseError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})",
                            f"give a UTF-8 text {what}") from None


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> Python data; a syntax error becomes `where:line: not valid YAML (...)`."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise TunewiseError(f"{where}{line}: not valid YAML ({getattr(e, 'problem', None) or e})",
                            "fix the YAML syntax (indentation, quotes, ':' after each key)") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # e.g. a timestamp no datetime can hold
        raise TunewiseError(f"{where}: a value cannot be read ({e})", "fix or quote that value") from None


def load_yaml(path: str | Path, what: str = "config file") -> Any:
    """The YAML document in a user's file (None for an empty one)."""
    path = require_file(path, what)
    return parse_yaml(read_user_text(path, what), str(path))


def read_json_file(path: str | Path, what: str = "file") -> Any:
    """A JSON file tunewise wrote (summary.json, compare.json, ...); damage is named with the file and line."""
    import json

    text = read_user_text(path, what)
    try:
        return json.loads(text)
    except ValueError as e:
        where = f"{path}:{e.lineno}" if isinstance(e, json.JSONDecodeError) else str(path)
        raise TunewiseError(f"{where}: damaged, not JSON ({getattr(e, 'msg', e)})",
                            f"restore {Path(path).name} or write it again with the command that made it") from None


def check_weights_file(path: str | Path) -> Path:
    """A safetensors file whose header reads (truncation and random bytes show here, before a model loads)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types for every kind of damage
        raise TunewiseError(f"{path}: damaged weights file ({str(e).splitlines()[0][:160] if str(e) else e!r})",
                            "write it again (train, merge) or restore it from a copy") from None
    return path


def check_count(value: int | None, flag: str, limit: int = MAX_COUNT, minimum: int = 0) -> None:
    """Refuse a size no one means (it would run for hours or exhaust memory without a word) before any work."""
    if value is None:
        return
    if value < minimum:
        raise TunewiseError(f"{flag} must be >= {minimum} (got {value})", f"give {flag} a count of {minimum} or more")
    if value > limit:
        raise TunewiseError(f"{flag} {value} is larger than tunewise allows ({limit:,})",
                            f"give {flag} a size up to {limit:,}")


def check_output(path: str | Path, flag: str, kind: str = "dir") -> Path:
    """Refuse an output path that cannot be written -- a file where a folder is wanted (or the reverse), a parent
    that is a file, a read-only place -- before the work starts. Creates nothing."""
    path = Path(path)
    if kind == "dir" and path.exists() and not path.is_dir():
        raise TunewiseError(f"{flag} '{path}' is a file, not a folder", f"give {flag} a folder path")
    if kind == "file" and path.is_dir():
        raise TunewiseError(f"{flag} '{path}' is a directory, not a file", f"give {flag} a file path")
    # The nearest existing ancestor decides whether we may create what is missing.
    probe = path if path.is_dir() else path.parent  # an existing file to overwrite: its folder decides
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise TunewiseError(f"{flag} '{path}': '{probe}' is a file, so nothing can be created under it",
                            f"give {flag} a path under a folder")
    target = path if kind == "dir" and path.exists() else probe
    if kind == "file" and path.exists():
        target = path
    if not os.access(target, os.W_OK) or (target.is_dir() and not os.access(target, os.X_OK)):
        raise TunewiseError(f"{flag} '{path}': '{target}' is not writable", f"choose a writable place for {flag}")
    return path


def looks_like_path(name: str) -> bool:
    """Existing paths, and names written as paths ('./x', '/x', '~/x', 'a/b/c'); 'org/name' is a hub id."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
