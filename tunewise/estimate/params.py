"""Exact parameter counts from a model's config, without weights.

The model is instantiated on PyTorch's meta device (shapes only, no storage), so a 70B config is counted in well
under a second and the counts are exactly what `from_pretrained` would build. LoRA on a matrix of shape
(d_out, d_in) trains r * (d_in + d_out) parameters (A: (r, d_in), B: (d_out, r); Hu et al. 2021, section 4.1).

torch and transformers are imported when a model is counted, not when the module is: advise and the CLI import this
package without loading them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.errors import TunewiseError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
# Names of the output projection PEFT's 'all-linear' leaves out (it is the vocabulary head, not a layer).
OUTPUT_LAYER_NAMES = ("lm_head", "embed_out", "output", "score", "classifier")
ADAPTER_BYTES_PER_PARAM = 4  # PEFT keeps adapter weights in fp32 (autocast_adapter_dtype=True) and saves them so


@dataclass(frozen=True)
class LinearGroup:
    """All linear layers sharing a name suffix (e.g. every layer's q_proj)."""

    name: str
    count: int
    d_in: int
    d_out: int
    params: int  # weight + bias parameters of the group, not counting weights shared with another module (tied)
    bias: bool

    def lora_params(self, r: int) -> int:
        return self.count * r * (self.d_in + self.d_out)


@dataclass
class ModelSpec:
    """What the estimator needs to know about a model: where it came from, its config and its exact counts."""

    name: str  # what the user typed
    source: str  # preset file, folder or hub id
    preset: str | None
    hub_id: str | None  # what `tunewise train` should load (base:) for this model
    architecture: str
    config: object = field(repr=False)
    total_params: int = 0
    embedding_params: int = 0
    linear: dict[str, LinearGroup] = field(default_factory=dict)
    output_layer: str | None = None  # name of the vocabulary head among `linear`, if any
    tied_output: bool = False

    @property
    def adaptable(self) -> list[str]:
        """Every linear module type except the vocabulary head: what 'all-linear' means (PEFT's definition)."""
        return [n for n in self.linear if n != self.output_layer]

    @property
    def linear_params(self) -> int:
        return sum(g.params for n, g in self.linear.items() if n != self.output_layer)


# ---------------------------------------------------------------------------------------------- resolving


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def _config_from_dict(data: dict, where: str):
    from transformers import AutoConfig

    data = dict(data)
    data.pop("_name_or_path", None)
    model_type = data.pop("model_type", None)
    if not model_type:
        raise TunewiseError(f"{where}: config has no 'model_type'", "give a Hugging Face config.json")
    try:
        return AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError) as e:
        raise TunewiseError(f"{where}: transformers does not know model_type '{model_type}' ({e})",
                            "upgrade transformers or pick a preset: " + ", ".join(preset_names())) from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TunewiseError(f"{path}:{e.lineno}: not valid JSON ({e.msg})", "give a Hugging Face config.json") from None


def resolve_model(name: str | os.PathLike) -> tuple[object, str, str | None, str | None]:
    """(config, source, preset, hub_id) for a preset name, 'tiny'/'minilm', a folder, a config.json or a hub id."""
    name = str(name)
    key = name.lower().removesuffix(".json")
    if (PRESET_DIR / f"{key}.json").is_file():
        data = _read_json(PRESET_DIR / f"{key}.json")
        return _config_from_dict(data, f"preset {key}"), f"preset {key}", key, data.get("_name_or_path")
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".json":
        data = _read_json(path)
        return _config_from_dict(data, str(path)), str(path), None, str(path.parent)
    from tunewise.models import load_config, resolve_base

    try:
        ref = resolve_base(name)
    except TunewiseError as e:
        raise TunewiseError(f"model '{name}': {e.message}", e.hint) from None
    if ref.path is not None and not (ref.path / "config.json").is_file():
        raise TunewiseError(f"model '{name}': {ref.path} has no config.json yet",
                            "build or download it first, or pick a preset: " + ", ".join(preset_names()))
    try:
        config = load_config(name)
    except TunewiseError as e:
        raise TunewiseError(f"model '{name}' is not a preset, a local folder or a reachable hub id: {e.message}",
                            f"presets: {', '.join(preset_names())}; or give a folder / config.json") from None
    return config, ref.source, None, name


# ---------------------------------------------------------------------------------------------- counting


def _is_linear(module) -> tuple[int, int] | None:
    """(d_in, d_out) of nn.Linear and GPT-2's Conv1D (weight stored transposed), else None."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "weight"):
        d_in, d_out = module.weight.shape
        return int(d_in), int(d_out)
    return None


def build_meta(config):
    """The model with shapes but no storage (meta device): exact structure at no memory cost."""
    from tunewise.model_size import meta_model

    return meta_model(config)


def count(config, name: str = "", source: str = "", preset: str | None = None,
          hub_id: str | None = None) -> ModelSpec:
    """Exact counts from a config: total, embeddings, and each linear module type with its shape."""
    import torch

    model = build_meta(config)
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already skips tied duplicates; the id set makes that explicit
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    groups: dict[str, dict] = {}
    owned: set[int] = set()
    for mod_name, module in model.named_modules():
        shape = _is_linear(module)
        if shape is None:
            continue
        suffix = mod_name.rsplit(".", 1)[-1]
        g = groups.setdefault(suffix, {"count": 0, "shape": shape, "params": 0, "bias": False})
        if g["shape"] != shape:  # same name, different shapes (rare): key by name and shape
            suffix = f"{suffix}[{shape[0]}x{shape[1]}]"
            g = groups.setdefault(suffix, {"count": 0, "shape": shape, "params": 0, "bias": False})
        g["count"] += 1
        for p in module.parameters(recurse=False):
            if id(p) not in owned:
                owned.add(id(p))
                g["params"] += p.numel()
        g["bias"] = g["bias"] or getattr(module, "bias", None) is not None
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    output_layer = None
    tied = False
    for n in groups:
        if n in OUTPUT_LAYER_NAMES:
            output_layer = n
    if out_emb is not None and output_layer is not None:
        inp = model.get_input_embeddings()
        tied = inp is not None and out_emb.weight is inp.weight
        if tied:  # the head's weight was counted with the embeddings; its group owns no new parameters
            groups[output_layer]["params"] = 0
    linear = {n: LinearGroup(n, g["count"], g["shape"][0], g["shape"][1], g["params"], g["bias"])
              for n, g in groups.items()}
    return ModelSpec(name=name, source=source, preset=preset, hub_id=hub_id, architecture=type(model).__name__,
                     config=config, total_params=total, embedding_params=embedding, linear=linear,
                     output_layer=output_layer, tied_output=tied)


def load_spec(name: str | os.PathLike) -> ModelSpec:
    config, source, preset, hub_id = resolve_model(name)
    return count(config, str(name), source, preset, hub_id)


# ---------------------------------------------------------------------------------------------- LoRA arithmetic


def lora_matrix_params(d_in: int, d_out: int, r: int) -> int:
    """Trainable parameters of LoRA on one (d_out, d_in) matrix: A (r, d_in) + B (d_out, r)."""
    return r * (d_in + d_out)


def resolve_targets(spec: ModelSpec, targets: str | list[str] | None) -> list[str]:
    """'auto' / 'all-linear' / None -> every linear type but the head; else check each name exists."""
    if targets is None or targets in ("auto", "all-linear", "all") or targets == ["all-linear"]:
        return spec.adaptable
    names = [t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets) if t.strip()]
    unknown = [t for t in names if t not in spec.linear]
    if unknown:
        raise TunewiseError(f"target module(s) {', '.join(unknown)} are not linear layers of {spec.architecture}",
                            f"use 'all-linear' or some of: {', '.join(spec.linear)}")
    return names


def lora_params(spec: ModelSpec, r: int, targets: list[str]) -> dict[str, int]:
    """Trainable LoRA parameters per target module type (exact)."""
    return {t: spec.linear[t].lora_params(r) for t in targets}


def adapter_file_bytes(spec: ModelSpec, r: int, targets: list[str]) -> int:
    """Size of adapter_model.safetensors: fp32 tensors + the JSON header (about 150 bytes per tensor)."""
    n_tensors = 2 * sum(spec.linear[t].count for t in targets)
    params = sum(lora_params(spec, r, targets).values())
    return params * ADAPTER_BYTES_PER_PARAM + 8 + 150 * n_tensors
