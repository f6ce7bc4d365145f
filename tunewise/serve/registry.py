"""Adapters on disk: safe names, safe paths, and a check of each adapter against the base before it is loaded.

An adapter is refused (with a reason) when it names another base, targets modules the base lacks, has tensors
whose shapes or rank do not fit, uses a non-float dtype, is stored as pickle, or would silently change nothing
(no LoRA weights, every lora_B zero, lora_alpha 0). The loaded set itself (LRU + pins) is `AdapterCache`,
plain bookkeeping with no torch, so its policy is tested on its own; the engine applies its decisions.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SAFETENSORS = "adapter_model.safetensors"
PICKLE_FILES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "adapter_model.pkl",
                "pytorch_model.bin")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# PEFT key layout: base_model.model.<module path>.lora_A.weight (the adapter name is stripped when saving).
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|"
                      r"lora_embedding_B|lora_magnitude_vector)(?:\.weight)?$")


class AdapterRefused(Exception):
    """Why an adapter (or a name / path for one) cannot be served; maps to an HTTP status and OpenAI code."""

    def __init__(self, reason: str, code: str = "adapter_refused", status: int = 400):
        self.reason, self.code, self.status = reason, code, status
        super().__init__(reason)


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


# --------------------------------------------------------------------------------------------- the base


@dataclass
class BaseInfo:
    """What an adapter is checked against: the base's identity and its adaptable modules' shapes."""

    name: str  # the id clients use for the base
    path: Path | None  # its folder, when local
    config: dict
    dtype: torch.dtype
    # module path -> (kind, in_features, out_features); kind 'linear' or 'embedding' (num, dim)
    modules: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model, name: str, path: Path | None) -> BaseInfo:
        modules: dict[str, tuple[str, int, int]] = {}
        for mname, m in model.named_modules():
            if isinstance(m, torch.nn.Linear):
                modules[mname] = ("linear", m.in_features, m.out_features)
            elif isinstance(m, torch.nn.Embedding):
                modules[mname] = ("embedding", m.num_embeddings, m.embedding_dim)
        params = {n: tuple(p.shape) for n, p in model.named_parameters()}
        return cls(name, path, model.config.to_dict(), next(model.parameters()).dtype, modules, params)


_IGNORED_CONFIG_KEYS = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures"}


def _file_digest(path: Path, _cache: dict = {}) -> str:  # noqa: B006 - a deliberate per-process cache
    key = (str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _cache[key] = h.hexdigest()
    return _cache[key]


def _same_folder_model(a: Path, b: Path) -> bool:
    """Two model folders hold the same model: same config (ignoring bookkeeping keys) and same weight bytes."""
    try:
        ca = json.loads((a / "config.json").read_text())
        cb = json.loads((b / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if {k: v for k, v in ca.items() if k not in _IGNORED_CONFIG_KEYS} != \
            {k: v for k, v in cb.items() if k not in _IGNORED_CONFIG_KEYS}:
        return False
    wa, wb = sorted(a.glob("*.safetensors")), sorted(b.glob("*.safetensors"))
    if not wa or [f.name for f in wa] != [f.name for f in wb]:
        return False
    return all(fa.stat().st_size == fb.stat().st_size and _file_digest(fa) == _file_digest(fb)
               for fa, fb in zip(wa, wb, strict=True))


def same_base(adapter_base: str, base: BaseInfo) -> bool:
    """Does the adapter's base_model_name_or_path name this base (by id, folder, or identical copy)?"""
    if adapter_base == base.name or (base.path is not None and adapter_base == str(base.path)):
        return True
    from tunewise.errors import TunewiseError
    from tunewise.models import resolve_base

    try:
        ref = resolve_base(adapter_base)
    except TunewiseError:
        return False
    if ref.path is None or base.path is None:
        return ref.name == base.name
    if ref.path.resolve() == base.path.resolve():
        return True
    return _same_folder_model(ref.path, base.path)


# ------------------------------------------------------------------------------------------- adapter check


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path
    rank: int
    alpha: float
    modules: tuple[str, ...]  # module paths the adapter changes
    dtype: str
    n_params: int
    base_model: str


TOKEN_DELTA = ".token_adapter.trainable_tokens_delta"  # PEFT's key for trainable token rows


def _read_config(path: Path) -> dict:
    cfg_file = path / "adapter_config.json"
    if not cfg_file.is_file():
        raise AdapterRefused(f"'{path}' has no adapter_config.json, so it is not a PEFT adapter folder")
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as e:
        raise AdapterRefused(f"{cfg_file}: not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise AdapterRefused(f"{cfg_file}: expected a JSON object")
    return cfg


def check_adapter(name: str, path: Path, base: BaseInfo, mixed_batches: bool = True) -> AdapterInfo:
    """Validate an adapter folder against the base without loading it into the model; raise AdapterRefused.

    `mixed_batches` also refuses what PEFT cannot apply per request in one batch (DoRA, trainable token rows): the
    server needs that, merging does not."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_dir():
        raise AdapterRefused(f"adapter '{name}': '{path}' is not a folder", code="model_not_found", status=404)
    cfg = _read_config(path)
    weights = path / SAFETENSORS
    if not weights.is_file():
        pickles = [f for f in PICKLE_FILES if (path / f).exists()]
        if pickles:
            raise AdapterRefused(
                f"adapter '{name}' is stored as pickle ({pickles[0]}); only safetensors adapters are served, "
                "because loading pickle can run arbitrary code: re-save it with save_pretrained() "
                "(safetensors) where you trust it", code="unsafe_adapter_format")
        raise AdapterRefused(f"adapter '{name}' has no {SAFETENSORS}")
    if cfg.get("peft_type") != "LORA":
        raise AdapterRefused(f"adapter '{name}' is a {cfg.get('peft_type')!r} adapter; only LoRA adapters are "
                             "served (mixed-adapter batches are a LoRA feature)")
    if mixed_batches and cfg.get("use_dora"):
        raise AdapterRefused(f"adapter '{name}' uses DoRA, which PEFT cannot mix with other adapters in one "
                             "batch; merge it with `tunewise merge` and serve the merged model instead")
    if mixed_batches and cfg.get("trainable_token_indices"):
        raise AdapterRefused(f"adapter '{name}' trains token embeddings (trainable_token_indices), which PEFT "
                             "applies per model, not per request, so other adapters in the batch would see them; "
                             "merge it with `tunewise merge` and serve the merged model instead")
    adapter_base = cfg.get("base_model_name_or_path")
    if not adapter_base:
        raise AdapterRefused(f"adapter '{name}' does not name its base model (base_model_name_or_path is "
                             "empty), so it cannot be checked against this base; set it in adapter_config.json")
    if not same_base(str(adapter_base), base):
        raise AdapterRefused(f"adapter '{name}' was trained on base '{adapter_base}', but the base here is "
                             f"'{base.name}'" + (f" ({base.path})" if base.path else "")
                             + "; use it with its own base (--base) or retrain it on this one", code="wrong_base")
    rank, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if not isinstance(rank, int) or rank <= 0:
        raise AdapterRefused(f"adapter '{name}': rank r={rank!r} must be a positive integer")
    if not isinstance(alpha, (int, float)) or alpha == 0:
        raise AdapterRefused(f"adapter '{name}': lora_alpha={alpha!r} scales every update to zero or is "
                             "missing, so the adapter would change nothing")
    rank_pattern = cfg.get("rank_pattern") or {}
    targets = cfg.get("target_modules")
    if isinstance(targets, list):
        short = {m.rsplit(".", 1)[-1] for m in base.modules} | set(base.modules)
        missing = [t for t in targets if t not in short and not any(m.endswith("." + t) for m in base.modules)]
        if missing:
            raise AdapterRefused(f"adapter '{name}' targets modules the base does not have: {missing}",
                                 code="wrong_base")

    lora: dict[str, dict[str, torch.Tensor]] = {}
    other: dict[str, torch.Tensor] = {}
    dtypes: set[torch.dtype] = set()
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has keys(), not __iter__
                t = f.get_tensor(key)
                dtypes.add(t.dtype)
                m = LORA_KEY.match(key)
                if m:
                    lora.setdefault(m["module"], {})[m["part"]] = t
                else:
                    other[key] = t
    except Exception as e:  # a corrupt file: report it, never crash the server
        raise AdapterRefused(f"adapter '{name}': cannot read {SAFETENSORS} ({type(e).__name__}: {e})") from e
    bad = [d for d in dtypes if d not in FLOAT_DTYPES]
    if bad:
        raise AdapterRefused(f"adapter '{name}' stores tensors as {bad[0]}; expected fp32, fp16 or bf16")

    changes = False
    for module, parts in sorted(lora.items()):
        if module not in base.modules:
            raise AdapterRefused(f"adapter '{name}' has weights for '{module}', which this base does not have",
                                 code="wrong_base")
        kind, n_in, n_out = base.modules[module]
        r = rank_pattern.get(module, next((v for k, v in rank_pattern.items() if module.endswith("." + k)), rank))
        a = parts.get("lora_A", parts.get("lora_embedding_A"))
        b = parts.get("lora_B", parts.get("lora_embedding_B"))
        if a is None or b is None:
            raise AdapterRefused(f"adapter '{name}': '{module}' has only one of lora_A / lora_B")
        # Linear: A (r, in), B (out, r). Embedding: A (r, num), B (dim, r).
        if tuple(a.shape) != (r, n_in) or tuple(b.shape) != (n_out, r):
            raise AdapterRefused(
                f"adapter '{name}': '{module}' has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, but "
                f"rank {r} on this base's {kind} ({n_in} -> {n_out}) needs ({r}, {n_in}) and ({n_out}, {r})",
                code="wrong_base")
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise AdapterRefused(f"adapter '{name}': '{module}' holds NaN or infinite values")
        changes = changes or bool(b.abs().max() > 0 and a.abs().max() > 0)
    token_rows = cfg.get("trainable_token_indices")
    for key, t in other.items():
        pname = key.removeprefix("base_model.model.")
        if pname.endswith(TOKEN_DELTA):  # trainable token rows: (rows named in the config, the embedding's width)
            emb = base.params.get(pname.removesuffix(TOKEN_DELTA) + ".weight")
            rows = token_rows.get(pname.removesuffix(TOKEN_DELTA).rsplit(".", 1)[-1]) if isinstance(
                token_rows, dict) else token_rows
            fits = (emb is not None and isinstance(rows, list) and rows and all(isinstance(i, int) for i in rows)
                    and tuple(t.shape) == (len(rows), emb[1]) and 0 <= min(rows) and max(rows) < emb[0])
            if not fits:
                raise AdapterRefused(f"adapter '{name}': trainable token rows '{key}' {tuple(t.shape)} do not fit "
                                     "this base's embeddings and the config's trainable_token_indices",
                                     code="wrong_base")
            if not torch.isfinite(t).all():
                raise AdapterRefused(f"adapter '{name}': '{key}' holds NaN or infinite values")
            changes = True
            continue
        if pname not in base.params or tuple(t.shape) != base.params[pname]:
            raise AdapterRefused(f"adapter '{name}': tensor '{key}' {tuple(t.shape)} does not fit any parameter "
                                 "of this base", code="wrong_base")
        changes = True  # a saved full module (modules_to_save) replaces the base's
    if not lora and not other:
        raise AdapterRefused(f"adapter '{name}' holds no LoRA weights, so it would change nothing")
    if not changes:
        raise AdapterRefused(f"adapter '{name}': every lora_B (or lora_A) is all zeros, so the adapter would "
                             "change nothing (was it saved before training?)", code="noop_adapter")
    n_params = sum(t.numel() for p in lora.values() for t in p.values()) + sum(t.numel() for t in other.values())
    dtype = ",".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
    return AdapterInfo(name, path, rank, float(alpha), tuple(sorted(lora)), dtype, n_params, str(adapter_base))


# ---------------------------------------------------------------------------------------- known adapters


def _signature(path: Path) -> tuple:
    """What a folder's check depends on: its files' names, sizes and modification times."""
    return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()))


@dataclass
class Entry:
    name: str
    path: Path
    source: str  # "registry" | "cli" | "runtime"


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
        info = check_adapter(name, path, self.base)
        with self._lock:
            self._entries[name] = Entry(name, path, source)
        return info

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
        entry = Entry(name, path, "registry")
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
                    self._entries.setdefault(sub.name, Entry(sub.name, path, "registry"))
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
