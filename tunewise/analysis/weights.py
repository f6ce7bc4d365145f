"""(W0, W) pairs per weight matrix, read straight from the files: a base folder plus a PEFT adapter folder, a
full fine-tuned model folder, or a run directory. No model is instantiated, so this is fast and uses little memory.

LoRA: W = W0 + scaling * B @ A, DoRA (use_dora): W = m / ||W0 + dW||_row * (W0 + dW), as PEFT merges them; the
keys, the scaling rule and the maths are tunewise.adapters' (format.py, delta.py). Full fine-tune: every 2-D weight present in both with the same shape (embeddings and the LM
head excluded unless asked: they are lookup tables, not linear maps of the hidden state).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from safetensors import safe_open

from tunewise.adapters import delta as lora_delta
from tunewise.adapters import format as adapter_format
from tunewise.errors import TunewiseError
from tunewise.models import resolve_base
from tunewise.targets import resolve_tuned

_EMBEDDING_NAMES = ("embed", "lm_head", "wte", "wpe", "word_embeddings", "position_embeddings",
                    "token_type_embeddings", "shared")
_LAYER_RE = re.compile(r"\.(\d+)\.")


class WeightFolder:
    """Lazy tensor access to a model folder: model.safetensors, sharded safetensors, or pytorch_model.bin."""

    def __init__(self, folder: Path, what: str = "model"):
        self.folder = Path(folder)
        self._files: dict[str, Path] = {}
        self._bin: dict[str, torch.Tensor] | None = None
        single = self.folder / "model.safetensors"
        index = self.folder / "model.safetensors.index.json"
        if single.is_file():
            with safe_open(str(single), "pt") as f:
                self._files = {k: single for k in f.keys()}
        elif index.is_file():
            wm = json.loads(index.read_text())["weight_map"]
            self._files = {k: self.folder / v for k, v in wm.items()}
        elif (self.folder / "pytorch_model.bin").is_file():
            self._bin = torch.load(self.folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise TunewiseError(f"{what} folder '{self.folder}' has no model.safetensors, sharded safetensors "
                                "or pytorch_model.bin", "point at a folder with the model's weights")

    def keys(self) -> list[str]:
        return list(self._bin) if self._bin is not None else list(self._files)

    def shape(self, key: str) -> tuple[int, ...]:
        if self._bin is not None:
            return tuple(self._bin[key].shape)
        with safe_open(str(self._files[key]), "pt") as f:
            return tuple(f.get_slice(key).get_shape())

    def get(self, key: str) -> torch.Tensor:
        if self._bin is not None:
            return self._bin[key]
        with safe_open(str(self._files[key]), "pt") as f:
            return f.get_tensor(key)


def base_folder(base: str) -> Path:
    """A base name ('tiny', a folder, a cached hub id) -> the local folder holding its weights."""
    ref = resolve_base(base)
    if ref.path is not None:
        return ref.path
    try:
        return Path(snapshot_download(ref.name, local_files_only=True))
    except Exception as e:
        raise TunewiseError(f"base '{base}' is not a local folder and is not in the local Hugging Face cache",
                            "give the base as a local folder (or download it where the hub is reachable)") from e


def module_info(name: str) -> tuple[int | None, str]:
    """(layer index, module type) from a module path: 'model.layers.3.mlp.up_proj' -> (3, 'up_proj')."""
    m = _LAYER_RE.search(name + ".")
    return (int(m.group(1)) if m else None), name.rsplit(".", 1)[-1]


@dataclass
class LoraFactors:
    """One adapted matrix's factors as stored (float32 copies) and where they live in the adapter file."""

    A: torch.Tensor  # [r, d_in]
    B: torch.Tensor  # [d_out, r]
    scaling: float
    key_A: str
    key_B: str
    magnitude: torch.Tensor | None = None  # DoRA
    transposed: bool = False  # embedding / fan_in_fan_out: dW = (B @ A).T

    def delta(self) -> torch.Tensor:
        return lora_delta.delta(self.A, self.B, self.scaling, self.transposed)


@dataclass
class MatrixPair:
    name: str
    W0: torch.Tensor  # float32 [d_out, d_in]
    W: torch.Tensor  # float32, the merged / tuned matrix
    lora: LoraFactors | None = None

    @property
    def layer(self) -> int | None:
        return module_info(self.name)[0]

    @property
    def module(self) -> str:
        return module_info(self.name)[1]


@dataclass
class TunedWeights:
    """What TUNED changed, as a stream of MatrixPairs. kind: 'lora' | 'dora' | 'full'."""

    kind: str
    base_dir: Path
    tuned_dir: Path
    adapter_config: dict | None = None
    skipped: list[str] = field(default_factory=list)
    _base: WeightFolder | None = None

    def pairs(self, modules: list[str] | None = None, include_embeddings: bool = False) -> Pairs:
        base = self._base or WeightFolder(self.base_dir, "base")
        if self.kind == "full":
            return _full_pairs(base, WeightFolder(self.tuned_dir, "tuned model"), modules, include_embeddings,
                               self.skipped)
        return _lora_pairs(base, self.tuned_dir, self.adapter_config or {}, modules, self.skipped)


@dataclass
class Pairs:
    """The matrices to analyse: how many is known up front from names and shapes (a progress bar's total), and
    each is read only when the iteration reaches it (a large model's matrices never all sit in memory)."""

    keys: list
    load: Callable[[Any], MatrixPair | None]  # None: skipped (the reason is in TunedWeights.skipped)
    empty: TunewiseError  # raised when no matrix was read

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[MatrixPair]:
        n = 0
        for key in self.keys:
            pair = self.load(key)
            if pair is not None:
                n += 1
                yield pair
        if n == 0:
            raise self.empty


def _wanted(name: str, modules: list[str] | None) -> bool:
    return not modules or module_info(name)[1] in modules or any(m in name for m in modules)


def _full_pairs(base: WeightFolder, tuned: WeightFolder, modules, include_embeddings, skipped) -> Pairs:
    base_keys = set(base.keys())
    keys = []
    for key in tuned.keys():
        if not key.endswith(".weight") or key not in base_keys:
            continue
        name = key[: -len(".weight")]
        if not include_embeddings and any(e in name for e in _EMBEDDING_NAMES):
            continue
        if not _wanted(name, modules):
            continue
        if len(tuned.shape(key)) != 2 or tuned.shape(key) != base.shape(key):
            if len(tuned.shape(key)) == 2:
                skipped.append(f"{name}: shape changed {base.shape(key)} -> {tuned.shape(key)}")
            continue
        keys.append(key)

    def load(key: str) -> MatrixPair | None:
        W = tuned.get(key)
        if not W.is_floating_point():
            skipped.append(f"{key[: -len('.weight')]}: not a float tensor ({W.dtype})")
            return None
        return MatrixPair(key[: -len(".weight")], base.get(key).to(torch.float32), W.to(torch.float32))

    return Pairs(keys, load, TunewiseError(
        f"the tuned model '{tuned.folder}' shares no 2-D weight with the base '{base.folder}'",
        "check that BASE is the model TUNED was fine-tuned from"))


def _find_base_key(module: str, base_keys: set[str]) -> str | None:
    """Adapters name modules by the wrapped model's path ('bert.encoder...'); base files may drop a prefix."""
    parts = module.split(".")
    for i in range(len(parts)):
        cand = ".".join(parts[i:]) + ".weight"
        if cand in base_keys:
            return cand
    return None


def _lora_pairs(base: WeightFolder, folder: Path, cfg: dict, modules, skipped) -> Pairs:
    tensors = adapter_format.read_weights(folder)
    base_keys = set(base.keys())
    fan_in_fan_out = bool(cfg.get("fan_in_fan_out"))
    keys = []  # (module, embedding, key_A, key_B, base_key): found up front, loaded one by one
    for key_A in sorted(tensors):
        k = adapter_format.parse_key(key_A)
        if k is None or not k.is_a:
            if k is None:
                skipped.append(f"{key_A}: not a LoRA factor (modules_to_save / trainable tokens are not analysed)")
            continue
        key_B = adapter_format.partner(key_A)
        if key_B not in tensors:
            raise TunewiseError(f"adapter '{folder}': {key_A} has no matching {key_B}",
                                "the adapter file is incomplete; save it again")
        if not _wanted(k.module, modules):
            continue
        base_key = _find_base_key(k.module, base_keys)
        if base_key is None:
            raise TunewiseError(f"adapter '{folder}' adapts '{k.module}' but the base has no weight for it",
                                "check that BASE is the model this adapter was trained on")
        keys.append((k.module, k.embedding, key_A, key_B, base_key))

    def load(item: tuple) -> MatrixPair:
        module, embedding, key_A, key_B, base_key = item
        A, B = tensors[key_A].to(torch.float32), tensors[key_B].to(torch.float32)
        lf = LoraFactors(A=A, B=B, scaling=lora_delta.module_scaling(cfg, module, A.shape[0]), key_A=key_A,
                         key_B=key_B, transposed=embedding or fan_in_fan_out)
        W0 = base.get(base_key).to(torch.float32)
        dW = lf.delta()
        if dW.shape != W0.shape:
            raise TunewiseError(f"adapter '{folder}': '{module}' has delta shape {tuple(dW.shape)} but the base "
                                f"weight is {tuple(W0.shape)}", "check that BASE is the model it was trained on")
        W = W0 + dW
        mag_key = adapter_format.magnitude_key(module, tensors)
        if mag_key is not None:  # DoRA
            lf.magnitude = tensors[mag_key].to(torch.float32)
            W = lora_delta.dora_weight(W, lf.magnitude)
        return MatrixPair(module, W0, W, lf)

    return Pairs(keys, load, TunewiseError(
        f"adapter '{folder}' has no LoRA factors" + (f" for modules {modules}" if modules else ""),
        "check the adapter folder (and --modules)"))


def open_tuned(base: str, tuned: str) -> TunedWeights:
    """Resolve TUNED (run dir / adapter / full model) with tunewise.targets.resolve_tuned and read its config."""
    ref = resolve_tuned(tuned, base)
    bdir = base_folder(base)
    if not ref.is_adapter:
        return TunedWeights("full", bdir, ref.path)
    cfg = adapter_format.read_config(ref.path)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise TunewiseError(f"adapter '{ref.path}' is {cfg.get('peft_type')}, not LoRA",
                            "analyze supports LoRA / DoRA adapters and full fine-tunes")
    return TunedWeights("dora" if cfg.get("use_dora") else "lora", bdir, ref.path, adapter_config=cfg)
