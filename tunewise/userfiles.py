"""Files the user hands us, and places the user asks us to write: checked once, here, with one clear error each.

Every config loader reads through `load_yaml`, so a binary file, a UTF-16 file or broken YAML reads the same
everywhere (file:line, what is wrong, what to do); every command that writes checks its output path with
`check_output` before the work starts, not after an hour of training.

PyYAML and safetensors are imported where a file is read: the CLI's start-up imports this module.
"""

from __future__ import annotations

import codecs
import json
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


# A YAML document larger than this once its aliases are expanded is refused before anything reads it: a few lines
# of nested aliases ("billion laughs") expand to more values than memory holds when validated or written back.
MAX_YAML_NODES = 1_000_000


class _Duplicate(Exception):
    def __init__(self, key: Any, first, again):
        self.key, self.first, self.again = key, first, again  # (line, column) of each, 1-based


def _strict_loader():
    """PyYAML's safe loader with one change: a key given twice in one mapping is an error (YAML says keys are
    unique; PyYAML keeps the last one without a word). Merge keys (`<<: *base`) may still be overridden."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, tuple[int, int]] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                try:
                    if key in seen:
                        raise _Duplicate(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key: PyYAML's own error names it below
                    pass
            return super().construct_mapping(node, deep)

    return StrictLoader


def _expanded_size(node, limit: int) -> int:
    """How many values the node tree holds with every alias expanded (shared nodes counted each time they are
    reached); stops counting past `limit`. Memoised per node, so the bomb itself is never expanded."""
    sizes: dict[int, int] = {}

    def size(n) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        sizes[id(n)] = limit + 1  # a node reached inside itself (a recursive alias) counts as too large
        children = [c for pair in n.value for c in pair] if isinstance(n.value, list) and n.value and \
            isinstance(n.value[0], tuple) else (n.value if isinstance(n.value, list) else [])
        total = 1
        for child in children:
            total = min(total + size(child), limit + 1)
        sizes[id(n)] = total
        return total

    return size(node)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> Python data, read strictly: a syntax error becomes `where:line: not valid YAML (...)`, a key
    given twice names both lines, and a document whose aliases expand past MAX_YAML_NODES values is refused
    before it is built."""
    import yaml

    loader = None
    try:
        loader = _strict_loader()(text)  # the reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise TunewiseError(f"{where}: the YAML expands to more than {MAX_YAML_NODES:,} values through its "
                                "aliases (*name)", "write the values out, or use fewer nested aliases")
        return loader.construct_document(node)
    except _Duplicate as e:
        raise TunewiseError(f"{where}:{e.again[0]}: duplicate key '{e.key}' at line {e.again[0]} column "
                            f"{e.again[1]}, first given at line {e.first[0]} column {e.first[1]}",
                            "give each key once; YAML keeps only one of them") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise TunewiseError(f"{where}{line}: not valid YAML ({getattr(e, 'problem', None) or e})",
                            "fix the YAML syntax (indentation, quotes, ':' after each key)") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # e.g. a timestamp no datetime can hold
        raise TunewiseError(f"{where}: a value cannot be read ({e})", "fix or quote that value") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(path: str | Path, what: str = "config file") -> Any:
    """The YAML document in a user's file (None for an empty one)."""
    path = require_file(path, what)
    return parse_yaml(read_user_text(path, what), str(path))


def read_json_file(path: str | Path, what: str = "file") -> Any:
    """A JSON file tunewise wrote (summary.json, compare.json, ...); damage is named with the file and line."""
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
