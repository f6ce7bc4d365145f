"""Device and dtype policy, in one place.

fp32 compute on CPU (bf16/fp16 matmuls are ~100x slower on AVX2 CPUs without native bf16), bf16 on CUDA
where the card supports it, fp16 on older CUDA cards. `--dtype` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunewise.errors import TunewiseError

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


@dataclass(frozen=True)
class Policy:
    device: torch.device
    dtype: torch.dtype
    reason: str


def pick_device(requested: str | None = None) -> torch.device:
    if requested and requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise TunewiseError(f"device '{requested}' was requested but CUDA is not available",
                                "use --device cpu, or install a CUDA build of torch (make demo TORCH=...)")
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def policy(device: str | None = None, dtype: str | None = None) -> Policy:
    dev = pick_device(device)
    if dtype and dtype != "auto":
        if dtype not in DTYPES:
            raise TunewiseError(f"unknown dtype '{dtype}'", f"use one of: auto, {', '.join(sorted(DTYPES))}")
        return Policy(dev, DTYPES[dtype], f"--dtype {dtype} given")
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Policy(dev, torch.bfloat16, "CUDA with bf16 support: bf16 compute")
        return Policy(dev, torch.float16, "CUDA without bf16: fp16 compute")
    return Policy(dev, torch.float32, "CPU: fp32 compute (bf16 matmuls are ~100x slower on CPUs without native bf16)")


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))
