"""PEFT's adapter folder on disk: its file names, its tensor keys, reading it and writing a changed copy.

A folder holds adapter_config.json and adapter_model.safetensors, whose keys are
`base_model.model.<module path>.lora_A.weight` (and lora_B, lora_embedding_A / _B, lora_magnitude_vector for DoRA):
PEFT strips the adapter's name ('.default') when it saves. This module is the only one in tunewise that spells
those keys; analysis, export, merge, serve and train ask it (`parse_key`, `partner`, `magnitude_key`, `is_lora_b`).
No model is built and peft is not imported, so reading is cheap (peft pulls in bitsandbytes).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_bytes

CONFIG = "adapter_config.json"
SAFETENSORS = "adapter_model.safetensors"
PICKLE_FILES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "adapter_model.pkl",
                "pytorch_model.bin")
PREFIX = "base_model.model."
A, B, EMBEDDING_A, EMBEDDING_B, MAGNITUDE = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B",
                                            "lora_magnitude_vector")
FACTORS = (A, B, EMBEDDING_A, EMBEDDING_B)
TOKEN_DELTA = ".token_adapter.trainable_tokens_delta"  # PEFT's key for trainable token rows
# base_model.model.<module path>.<part>.weight; the prefix is optional (a bare PEFT state dict has none) and so is
# '.weight' (the magnitude vector is saved without it by some PEFT versions).
KEY = re.compile(rf"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>{A}|{B}|{EMBEDDING_A}|{EMBEDDING_B}|"
                 rf"{MAGNITUDE})(?P<weight>\.weight)?$")


@dataclass(frozen=True)
class Key:
    """One parsed adapter key: the adapted module's path and which part of its LoRA it holds."""

    module: str
    part: str  # lora_A, lora_B, lora_embedding_A, lora_embedding_B or lora_magnitude_vector
    prefixed: bool  # written with PEFT's base_model.model. prefix, as a saved folder is
    weight: bool  # ends in .weight

    @property
    def is_a(self) -> bool:
        return self.part in (A, EMBEDDING_A)

    @property
    def is_b(self) -> bool:
        return self.part in (B, EMBEDDING_B)

    @property
    def embedding(self) -> bool:
        return self.part in (EMBEDDING_A, EMBEDDING_B)

    @property
    def factor(self) -> str:
        """'A' or 'B' ('' for the magnitude vector)."""
        return "A" if self.is_a else "B" if self.is_b else ""


def parse_key(key: str) -> Key | None:
    """The module and part a key of an adapter file holds; None for anything else (saved modules, token rows)."""
    m = KEY.match(key)
    if m is None:
        return None
    return Key(m["module"], m["part"], key.startswith(PREFIX), m["weight"] is not None)


def partner(key: str) -> str:
    """The B key of an A key (lora_A -> lora_B, lora_embedding_A -> lora_embedding_B), spelled alike."""
    k = parse_key(key)
    if k is None or not k.is_a:
        raise ValueError(f"'{key}' is not a LoRA A key")
    other = B if k.part == A else EMBEDDING_B
    return (PREFIX if k.prefixed else "") + f"{k.module}.{other}" + (".weight" if k.weight else "")


def magnitude_key(module: str, tensors: dict) -> str | None:
    """DoRA's magnitude vector for `module` as this file spells it, or None when the adapter has none."""
    return next((k for k in (f"{PREFIX}{module}.{MAGNITUDE}", f"{PREFIX}{module}.{MAGNITUDE}.weight") if k in tensors),
                None)


def is_lora_b(param_name: str) -> bool:
    """A live PEFT model's parameter name (`...q_proj.lora_B.default.weight`) is a linear layer's B factor (LoRA+
    gives B its own learning rate)."""
    return f".{B}." in f".{param_name}."


def module_of(key: str) -> str:
    """A saved key's parameter path in the base model (PEFT's prefix dropped)."""
    return key.removeprefix(PREFIX)


# ---------------------------------------------------------------------------------------------- the folder


def read_config(folder: Path) -> dict:
    """adapter_config.json as a dict; a missing or damaged file is one clear error."""
    f = Path(folder) / CONFIG
    if not f.is_file():
        raise TunewiseError(f"'{folder}' has no {CONFIG}, so it is not a PEFT adapter folder",
                            "point at the adapter folder train wrote (or a run directory)")
    try:
        cfg = json.loads(f.read_text())
    except ValueError as e:
        raise TunewiseError(f"{f}: not valid JSON ({e})", f"restore {CONFIG} as PEFT wrote it") from e
    if not isinstance(cfg, dict):
        raise TunewiseError(f"{f}: expected a JSON object", f"restore {CONFIG} as PEFT wrote it")
    return cfg


def weights_file(folder: Path) -> Path:
    f = Path(folder) / SAFETENSORS
    if f.is_file():
        return f
    raise TunewiseError(f"adapter folder '{folder}' has no {SAFETENSORS}",
                        "save adapters with save_pretrained (safetensors is the default)")


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors file, under its saved key."""
    return load_file(str(weights_file(folder)))


def read_adapter(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, tensors) of a PEFT adapter folder."""
    return read_config(folder), read_weights(folder)


def factor_pairs(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{module: {'A': tensor, 'B': tensor}} of the LoRA factors (magnitudes and other tensors left out)."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        k = parse_key(key)
        if k is not None and k.factor:
            pairs.setdefault(k.module, {})[k.factor] = t
    return pairs


def write_copy(src: Path, dst: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Fill the empty folder `dst` with `src`'s files (config, tokenizer, labels) and `tensors` as its weights,
    atomically per file; the caller owns `dst` (and renames it into place)."""
    for f in Path(src).iterdir():
        if f.is_file() and not f.name.startswith("adapter_model."):
            shutil.copy2(f, Path(dst) / f.name)
    atomic_write_bytes(Path(dst) / SAFETENSORS, save(tensors, metadata={"format": "pt"}))
