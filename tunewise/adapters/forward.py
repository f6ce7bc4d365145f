"""A live PEFT LoRA layer's factors and the LoRA linear forward that training and serving both compute.

A PEFT `lora.Linear` holds, per adapter name, lora_A[name] (r x in), lora_B[name] (out x r) and scaling[name], and
computes `base(x) + scaling * (x A^T) B^T`. The fused training functions (train/fused_lora.py, train/fused_mlp.py)
and per-row serving (generate/rowlora.py) replace that forward with their own kernels of the same maths; they read
the factors and decide which layers they can compute exactly here, so neither knows PEFT's layer layout.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from peft.tuners.lora import LoraLayer
from peft.tuners.lora.layer import Linear
from peft.utils import ModulesToSaveWrapper


def lora_layers(model) -> Iterator[tuple[str, torch.nn.Module]]:
    """(name, layer) for every PEFT LoRA layer of `model`."""
    for name, m in model.named_modules():
        if isinstance(m, LoraLayer):
            yield name, m


def is_lora_linear(module) -> bool:
    """`module` is exactly PEFT's lora.Linear (not a quantized or other subclass): what the fused kernels replace."""
    return type(module) is Linear


def has_factors(layer, adapter: str) -> bool:
    """`adapter` has linear A/B factors on this layer."""
    return adapter in layer.lora_A


def adapts(layer, adapter: str) -> bool:
    """`adapter` changes this layer at all (linear or embedding factors)."""
    return has_factors(layer, adapter) or adapter in getattr(layer, "lora_embedding_A", {})


def plain_linear(layer, adapter: str) -> bool:
    """`adapter` is vanilla LoRA on a plain lora.Linear here: no LoRA bias, no variant (DoRA and the like)."""
    return (is_lora_linear(layer) and has_factors(layer, adapter) and not layer.lora_bias.get(adapter)
            and adapter not in getattr(layer, "lora_variant", {}))


def saves_modules(model, adapter: str) -> bool:
    """`adapter` replaces whole modules (modules_to_save) somewhere in `model`."""
    return any(isinstance(m, ModulesToSaveWrapper) and adapter in m.modules_to_save for m in model.modules())


def factors(layer, adapter: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A, B, scaling) of `adapter` on this layer: the update is scaling * B @ A."""
    return layer.lora_A[adapter].weight, layer.lora_B[adapter].weight, float(layer.scaling[adapter])


def rank(layer, adapter: str) -> int:
    return layer.lora_A[adapter].weight.shape[0]


def lora_parts(layer, x: torch.Tensor) -> tuple | None:
    """(weight, bias, A, B, scaling) of a PEFT lora.Linear whose call on `x` `lora_linear` computes exactly (one
    active vanilla adapter, no dropout, a plain nn.Linear base, no LoRA bias, one dtype), or None when the call
    needs PEFT's general path."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if not has_factors(layer, name) or name in getattr(layer, "lora_variant", {}):
        return None
    base, lora_a, lora_b = layer.base_layer, layer.lora_A[name], layer.lora_B[name]
    if type(base) is not torch.nn.Linear or not isinstance(layer.lora_dropout[name], torch.nn.Identity):
        return None
    if lora_a.bias is not None or lora_b.bias is not None:
        return None
    if not (x.dtype == base.weight.dtype == lora_a.weight.dtype == lora_b.weight.dtype):
        return None
    return base.weight, base.bias, lora_a.weight, lora_b.weight, float(layer.scaling[name])


# ------------------------------------------------------------------------------------------------- the maths


def project(flat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """flat W^T + bias, as one addmm when there is a bias."""
    return torch.addmm(bias, flat, weight.t()) if bias is not None else flat @ weight.t()


def add_low_rank_(out: torch.Tensor, low: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """out += scaling * low B^T in place, `low` being x A^T: the scale lands on the small rank-r product."""
    return out.addmm_(low, lora_b.t(), alpha=scaling)


def lora_linear(flat: torch.Tensor, weight, bias, lora_a, lora_b, scaling: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat W^T + bias + scaling * (flat A^T) B^T, flat A^T) for flat (tokens x in): the rank-r product is
    returned too, since backward needs it."""
    low = flat @ lora_a.t()  # (tokens, r)
    return add_low_rank_(project(flat, weight, bias), low, lora_b, scaling), low
