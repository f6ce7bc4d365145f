"""Checking a LoRA adapter folder against a base before anything loads it: `tunewise serve` and `tunewise merge`
both call `check_adapter` (re-exported by tunewise.adapters).

An adapter is refused (with a reason) when it names another base, targets modules the base lacks, has tensors
whose shapes or rank do not fit, uses a non-float dtype, is stored as pickle, or would silently change nothing
(no LoRA weights, every lora_B zero, lora_alpha 0). The config is checked first (`check_config`: no tensor is
read), then the tensors (`read_tensors`, `check_tensors`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from tunewise.adapters.format import (
    EMBEDDING_A,
    EMBEDDING_B,
    PICKLE_FILES,
    PREFIX,
    SAFETENSORS,
    TOKEN_DELTA,
    A,
    B,
    parse_key,
    read_config,
)
from tunewise.errors import TunewiseError
from tunewise.models import resolve_base

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class AdapterRefused(Exception):
    """Why an adapter (or a name / path for one) cannot be served; maps to an HTTP status and OpenAI code."""

    def __init__(self, reason: str, code: str = "adapter_refused", status: int = 400):
        self.reason, self.code, self.status = reason, code, status
        super().__init__(reason)


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


def _read_config(path: Path) -> dict:
    try:
        return read_config(path)
    except TunewiseError as e:  # the server answers a refusal (a status and a code), not a CLI error
        raise AdapterRefused(e.message) from e



def _adapter_files(name: str, path: Path) -> tuple[dict, Path]:
    """The folder's config and its safetensors file; a pickle-only adapter is refused before anything is read."""
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
    return cfg, weights


# -------------------------------------------------------------------------------------------- config checks


def _check_kind(name: str, cfg: dict, mixed_batches: bool) -> None:
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


def _check_base(name: str, cfg: dict, base: BaseInfo) -> None:
    adapter_base = cfg.get("base_model_name_or_path")
    if not adapter_base:
        raise AdapterRefused(f"adapter '{name}' does not name its base model (base_model_name_or_path is "
                             "empty), so it cannot be checked against this base; set it in adapter_config.json")
    if not same_base(str(adapter_base), base):
        raise AdapterRefused(f"adapter '{name}' was trained on base '{adapter_base}', but the base here is "
                             f"'{base.name}'" + (f" ({base.path})" if base.path else "")
                             + "; use it with its own base (--base) or retrain it on this one", code="wrong_base")


def _check_scale_and_targets(name: str, cfg: dict, base: BaseInfo) -> None:
    rank, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if not isinstance(rank, int) or rank <= 0:
        raise AdapterRefused(f"adapter '{name}': rank r={rank!r} must be a positive integer")
    if not isinstance(alpha, (int, float)) or alpha == 0:
        raise AdapterRefused(f"adapter '{name}': lora_alpha={alpha!r} scales every update to zero or is "
                             "missing, so the adapter would change nothing")
    targets = cfg.get("target_modules")
    if isinstance(targets, list):
        short = {m.rsplit(".", 1)[-1] for m in base.modules} | set(base.modules)
        missing = [t for t in targets if t not in short and not any(m.endswith("." + t) for m in base.modules)]
        if missing:
            raise AdapterRefused(f"adapter '{name}' targets modules the base does not have: {missing}",
                                 code="wrong_base")


def check_config(name: str, cfg: dict, base: BaseInfo, mixed_batches: bool = True) -> None:
    """What adapter_config.json alone decides: a LoRA adapter, for this base, with a rank and a scale that
    change something, targeting modules the base has. `mixed_batches` also refuses what PEFT cannot apply per
    request in one batch (DoRA, trainable token rows): the server needs that, merging does not."""
    _check_kind(name, cfg, mixed_batches)
    _check_base(name, cfg, base)
    _check_scale_and_targets(name, cfg, base)


# -------------------------------------------------------------------------------------------- tensor checks


@dataclass
class AdapterTensors:
    """The adapter file's tensors: LoRA pairs by module path, everything else by key, and the dtypes seen."""

    lora: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    other: dict[str, torch.Tensor] = field(default_factory=dict)
    dtypes: set[torch.dtype] = field(default_factory=set)

    @property
    def n_params(self) -> int:
        return sum(t.numel() for p in self.lora.values() for t in p.values()) + \
            sum(t.numel() for t in self.other.values())


def read_tensors(name: str, weights: Path) -> AdapterTensors:
    """Every tensor of the safetensors file, grouped; a corrupt file is a refusal, never a crash."""
    out = AdapterTensors()
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has keys(), not __iter__
                t = f.get_tensor(key)
                out.dtypes.add(t.dtype)
                k = parse_key(key)
                if k is not None and k.prefixed:  # as PEFT saves it; anything else must fit a base parameter
                    out.lora.setdefault(k.module, {})[k.part] = t
                else:
                    out.other[key] = t
    except Exception as e:  # a corrupt file: report it, never crash the server
        raise AdapterRefused(f"adapter '{name}': cannot read {SAFETENSORS} ({type(e).__name__}: {e})") from e
    return out


def _check_lora_pair(name: str, module: str, parts: dict[str, torch.Tensor], cfg: dict, base: BaseInfo) -> bool:
    """Refuse a pair that does not fit the base's module at its rank; True when it changes the module."""
    if module not in base.modules:
        raise AdapterRefused(f"adapter '{name}' has weights for '{module}', which this base does not have",
                             code="wrong_base")
    kind, n_in, n_out = base.modules[module]
    rank_pattern = cfg.get("rank_pattern") or {}
    r = rank_pattern.get(module, next((v for k, v in rank_pattern.items() if module.endswith("." + k)), cfg["r"]))
    a = parts.get(A, parts.get(EMBEDDING_A))
    b = parts.get(B, parts.get(EMBEDDING_B))
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
    return bool(b.abs().max() > 0 and a.abs().max() > 0)


def _check_token_rows(name: str, key: str, t: torch.Tensor, cfg: dict, base: BaseInfo) -> None:
    """Trainable token rows: (rows named in the config, the embedding's width), inside the embedding."""
    pname = key.removeprefix(PREFIX).removesuffix(TOKEN_DELTA)
    emb = base.params.get(pname + ".weight")
    token_rows = cfg.get("trainable_token_indices")
    rows = token_rows.get(pname.rsplit(".", 1)[-1]) if isinstance(token_rows, dict) else token_rows
    fits = (emb is not None and isinstance(rows, list) and rows and all(isinstance(i, int) for i in rows)
            and tuple(t.shape) == (len(rows), emb[1]) and 0 <= min(rows) and max(rows) < emb[0])
    if not fits:
        raise AdapterRefused(f"adapter '{name}': trainable token rows '{key}' {tuple(t.shape)} do not fit "
                             "this base's embeddings and the config's trainable_token_indices",
                             code="wrong_base")
    if not torch.isfinite(t).all():
        raise AdapterRefused(f"adapter '{name}': '{key}' holds NaN or infinite values")


def _check_other(name: str, key: str, t: torch.Tensor, cfg: dict, base: BaseInfo) -> None:
    """A tensor outside the LoRA pairs: trainable token rows, or a saved full module (modules_to_save) that
    replaces the base's parameter of the same shape."""
    pname = key.removeprefix(PREFIX)
    if pname.endswith(TOKEN_DELTA):
        _check_token_rows(name, key, t, cfg, base)
    elif pname not in base.params or tuple(t.shape) != base.params[pname]:
        raise AdapterRefused(f"adapter '{name}': tensor '{key}' {tuple(t.shape)} does not fit any parameter "
                             "of this base", code="wrong_base")


def check_tensors(name: str, tensors: AdapterTensors, cfg: dict, base: BaseInfo) -> None:
    """Float dtypes, every tensor fits the base, nothing NaN, and the adapter changes something. Needs a config
    `check_config` accepted (its rank)."""
    bad = [d for d in tensors.dtypes if d not in FLOAT_DTYPES]
    if bad:
        raise AdapterRefused(f"adapter '{name}' stores tensors as {bad[0]}; expected fp32, fp16 or bf16")
    changes = False
    for module, parts in sorted(tensors.lora.items()):
        changes = _check_lora_pair(name, module, parts, cfg, base) or changes
    for key, t in tensors.other.items():
        _check_other(name, key, t, cfg, base)
        changes = True  # token rows and saved modules replace what the base has
    if not tensors.lora and not tensors.other:
        raise AdapterRefused(f"adapter '{name}' holds no LoRA weights, so it would change nothing")
    if not changes:
        raise AdapterRefused(f"adapter '{name}': every lora_B (or lora_A) is all zeros, so the adapter would "
                             "change nothing (was it saved before training?)", code="noop_adapter")


def check_adapter(name: str, path: Path, base: BaseInfo, mixed_batches: bool = True) -> AdapterInfo:
    """Validate an adapter folder against the base without loading it into the model; raise AdapterRefused.

    `mixed_batches` also refuses what PEFT cannot apply per request in one batch (DoRA, trainable token rows): the
    server needs that, merging does not."""
    path = Path(path)
    cfg, weights = _adapter_files(name, path)
    check_config(name, cfg, base, mixed_batches)
    tensors = read_tensors(name, weights)
    check_tensors(name, tensors, cfg, base)
    dtype = ",".join(sorted(str(d).removeprefix("torch.") for d in tensors.dtypes))
    return AdapterInfo(name, path, cfg["r"], float(cfg["lora_alpha"]), tuple(sorted(tensors.lora)), dtype,
                       tensors.n_params, str(cfg["base_model_name_or_path"]))
