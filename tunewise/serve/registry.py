"""Adapters on disk: safe names, safe paths, and which adapters the server knows (each checked against the base
by tunewise.adapters before it is loaded). The loaded set itself (LRU + pins) is `AdapterCache`,
plain bookkeeping with no torch, so its policy is tested on its own; the engine applies its decisions.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from tunewise.adapters import AdapterInfo, AdapterRefused, BaseInfo, check_adapter

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate_name(name: str) -> str:
    """Adapter names are plain identifiers: no separators, no '..', nothing absolute, not '__base__'."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise AdapterRefused(
            f"invalid adapter name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit, without '..' or path separators", code="invalid_adapter_name")
    return name


def _inside(path: Path, root: Path) -> bool:
    path, root = path.resolve(), root.resolve()
    return path == root or root in path.parents


def registry_path(root: Path, name: str) -> Path:
    """root/name, refused if the name is unsafe or the folder (or a file in it) is a symlink leading out of root."""
    validate_name(name)
    p = root / name
    if not p.exists():
        raise AdapterRefused(f"no adapter named '{name}' in the registry", code="model_not_found", status=404)
    if not _inside(p, root):
        raise AdapterRefused(f"adapter '{name}' is a symlink that leads out of the registry ({p.resolve()})",
                             code="invalid_adapter_path")
    for f in p.iterdir():
        if not _inside(f, root):
            raise AdapterRefused(f"adapter '{name}': file '{f.name}' is a symlink that leads out of the registry",
                                 code="invalid_adapter_path")
    return p


# ---------------------------------------------------------------------------------------- known adapters


def _signature(path: Path) -> tuple:
    """What a folder's check depends on: its files' names, sizes and modification times."""
    return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()))


@dataclass
class Entry:
    name: str
    path: Path
    source: str  # "registry" | "cli" | "runtime"
    signature: tuple = ()  # its files when it was registered or last refreshed (see Registry.refresh)


class Registry:
    """The adapters this server knows about (not which are in memory). Safe to call from request threads."""

    def __init__(self, base: BaseInfo, root: Path | None = None, extra: dict[str, Path] | None = None,
                 allow_runtime_paths: bool = False):
        self.base, self.root = base, (Path(root) if root else None)
        self.allow_runtime_paths = allow_runtime_paths
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self.refused: dict[str, str] = {}  # name -> reason, from the last scan
        self._checked: dict[str, tuple] = {}  # name -> (files signature, AdapterRefused | None)
        if self.root is not None and not self.root.is_dir():
            raise AdapterRefused(f"adapter registry '{self.root}' is not a folder", code="invalid_adapter_path")
        for name, path in (extra or {}).items():
            self.add(name, Path(path), source="cli")

    def _check_name_free(self, name: str) -> None:
        validate_name(name)
        if name == self.base.name:
            raise AdapterRefused(f"adapter name '{name}' is the base's id; pick another name",
                                 code="invalid_adapter_name")

    def add(self, name: str, path: Path, source: str = "runtime") -> AdapterInfo:
        """Register an adapter at an explicit path (CLI --adapter, or admin load with runtime paths on)."""
        self._check_name_free(name)
        if source == "runtime" and not self.allow_runtime_paths:
            raise AdapterRefused("loading adapters from arbitrary paths is off; put the adapter in the registry "
                                 "folder or start the server with --allow-runtime-paths",
                                 code="runtime_paths_disabled", status=403)
        path = Path(path).expanduser().resolve()
        self._refuse_other_path(name, path)
        info = check_adapter(name, path, self.base)
        with self._lock:  # the same folder again keeps its record: `refresh` tells whether its files changed
            if name not in self._entries or self._entries[name].path.resolve() != path:
                self._entries[name] = Entry(name, path, source, _signature(path))
        return info

    def _refuse_other_path(self, name: str, path: Path) -> None:
        """A name stands for one folder: another folder under a name that is served is a 409, not a silent swap
        that would keep answering with the weights in memory while the listing shows the new path."""
        with self._lock:
            known = self._entries.get(name)
        other = known.path if known is not None else (self.root / name if self.root is not None else None)
        if other is not None and other.exists() and other.resolve() != path:
            raise AdapterRefused(f"an adapter named '{name}' is already served from {other}; unload it with "
                                 "forget: true first, or load this one under another name",
                                 code="adapter_exists", status=409)

    def refresh(self, name: str) -> bool:
        """Whether `name`'s files changed on disk since it was registered; if so they are checked again (a
        refusal is raised and the entry keeps its old files' record) and recorded. The caller reloads it."""
        entry = self.get(name)
        sig = _signature(entry.path)
        if sig == entry.signature:
            return False
        check_adapter(name, entry.path, self.base)
        with self._lock:
            entry.signature = sig
        return True

    def forget(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def get(self, name: str) -> Entry:
        """The entry for a name, looking in the registry folder for names not seen yet."""
        validate_name(name)
        with self._lock:
            if name in self._entries:
                return self._entries[name]
        if self.root is None:
            raise AdapterRefused(f"the model '{name}' does not exist", code="model_not_found", status=404)
        path = registry_path(self.root, name)
        entry = Entry(name, path, "registry", _signature(path))
        with self._lock:
            self._entries.setdefault(name, entry)
        return entry

    def scan(self) -> dict[str, Entry]:
        """(Re)read the registry folder: every valid adapter sub-folder is known, others go to `refused`."""
        refused: dict[str, str] = {}
        if self.root is not None:
            for sub in sorted(self.root.iterdir()):
                if not sub.is_dir():
                    continue
                try:
                    self._check_name_free(sub.name)
                    path = registry_path(self.root, sub.name)
                    sig = _signature(path)
                    if self._checked.get(sub.name, (None,))[0] != sig:  # re-check only what changed on disk
                        try:
                            check_adapter(sub.name, path, self.base)
                            self._checked[sub.name] = (sig, None)
                        except AdapterRefused as e:
                            self._checked[sub.name] = (sig, e)
                    if self._checked[sub.name][1] is not None:
                        raise self._checked[sub.name][1]
                except AdapterRefused as e:
                    refused[sub.name] = e.reason
                    continue
                with self._lock:
                    self._entries.setdefault(sub.name, Entry(sub.name, path, "registry", sig))
        with self._lock:
            for name in refused:
                if self._entries.get(name) and self._entries[name].source == "registry":
                    del self._entries[name]
            self.refused = refused
            return dict(self._entries)

    def entries(self) -> dict[str, Entry]:
        with self._lock:
            return dict(self._entries)


# --------------------------------------------------------------------------------------- loaded adapters


class AdapterCache:
    """LRU bookkeeping for adapters in memory, with pins. Pure policy: the engine does the loading."""

    def __init__(self, max_loaded: int):
        if max_loaded < 1:
            raise ValueError("max_loaded must be at least 1")
        self.max_loaded = max_loaded
        self._lru: OrderedDict[str, None] = OrderedDict()  # oldest first
        self.pinned: set[str] = set()

    @property
    def loaded(self) -> list[str]:
        return list(self._lru)

    def __contains__(self, name: str) -> bool:
        return name in self._lru

    def touch(self, name: str) -> None:
        self._lru.move_to_end(name)

    def capacity_for(self, needed: list[str]) -> list[str]:
        """The longest prefix of `needed` (distinct names, in order) that fits in memory at once."""
        room = self.max_loaded - len([p for p in self.pinned if p in self._lru])
        fitted: list[str] = []
        for n in needed:
            extra = 0 if n in self.pinned else 1
            if extra and room - extra < 0:
                break
            room -= extra
            fitted.append(n)
        return fitted

    def plan(self, needed: list[str]) -> list[str]:
        """Which loaded adapters to evict (least recently used, never pinned or needed) so `needed` fits."""
        missing = [n for n in needed if n not in self._lru]
        over = len(self._lru) + len(missing) - self.max_loaded
        evict: list[str] = []
        for n in self._lru:
            if over <= 0:
                break
            if n not in self.pinned and n not in needed:
                evict.append(n)
                over -= 1
        if over > 0:
            raise AdapterRefused(f"cannot fit adapters {missing} in memory: {self.max_loaded} slots, pinned "
                                 f"{sorted(self.pinned)}", code="capacity", status=503)
        return evict

    def added(self, name: str) -> None:
        self._lru[name] = None
        self._lru.move_to_end(name)

    def removed(self, name: str) -> None:
        self._lru.pop(name, None)
        self.pinned.discard(name)

    def pin(self, name: str, on: bool = True) -> None:
        if on and name not in self.pinned and len(self.pinned) + 1 >= self.max_loaded:
            raise AdapterRefused(f"cannot pin '{name}': at most {self.max_loaded - 1} adapters can be pinned with "
                                 f"--max-loaded {self.max_loaded} (one slot stays free for the rest)",
                                 code="too_many_pinned", status=409)
        if on:
            self.pinned.add(name)
        else:
            self.pinned.discard(name)
