"""LoRA's scaling rule and the weight change one module's factors make: pure tensor maths, no files, no peft.

PEFT scales a module's update by alpha / r (alpha / sqrt(r) with use_rslora, rsLoRA), alpha taken from
alpha_pattern where a pattern matches the module. The update is dW = scaling * B @ A (A: r x in, B: out x r),
transposed for an embedding or a fan_in_fan_out layer (they store the weight the other way round). DoRA then
rescales each output row of W0 + dW to the learned magnitude, as PEFT merges it.
"""

from __future__ import annotations

import re

import torch

DEFAULT_ALPHA = 8  # PEFT's LoraConfig default, for a config that does not say


def scaling(alpha: float, r: int, rslora: bool = False) -> float:
    """PEFT's multiplier of B @ A: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    return alpha / (r ** 0.5) if rslora else alpha / r


def module_alpha(cfg: dict, module: str) -> float:
    """The alpha an adapter config gives `module`: alpha_pattern's first match (PEFT's get_pattern_key rule: the
    pattern names the module path's tail), else lora_alpha."""
    for pattern, value in (cfg.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return cfg.get("lora_alpha", DEFAULT_ALPHA)


def module_scaling(cfg: dict, module: str, r: int) -> float:
    """The scaling of `module` at rank `r` (read r from A's shape: rank_pattern then needs no parsing)."""
    return scaling(module_alpha(cfg, module), r, bool(cfg.get("use_rslora")))


def alpha_for_rank_division(cfg: dict) -> float:
    """The alpha whose alpha / r equals this config's scaling (llama.cpp divides by r, rsLoRA or not)."""
    r = int(cfg["r"])
    return scaling(float(cfg["lora_alpha"]), r, bool(cfg.get("use_rslora"))) * r


def delta(A: torch.Tensor, B: torch.Tensor, scale: float, transposed: bool = False) -> torch.Tensor:
    """dW = scale * B @ A, as the base weight stores it (transposed for embeddings and fan_in_fan_out)."""
    d = scale * (B @ A)
    return d.T if transposed else d


def dora_weight(W: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """DoRA's merged weight from W = W0 + dW: each output row rescaled to its learned magnitude."""
    return (magnitude / torch.linalg.norm(W, dim=1)).view(-1, 1) * W
