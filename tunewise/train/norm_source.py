"""Recompute a frozen RMSNorm's output in backward instead of keeping it: the LoRA layers that read it keep less.

In a Llama-style layer the attention norm's output feeds q, k and v, and the MLP norm's output feeds gate and up.
Every LoRA layer keeps its input for its A factor's gradient, so each norm output (tokens x hidden) stays alive until
backward, although the norm itself keeps its input (the residual stream) anyway and its output is one cheap
elementwise pass away. `install(model)` tags each frozen RMSNorm's output with a NormSource (the norm and its
input); the fused LoRA functions (fused_lora.py, fused_mlp.py) keep the source instead of the tensor and rebuild the
tensor once in backward, shared by the layers that read it. The rebuilt values are bitwise those of the forward
pass: the same module, the same input, the same kernels.
"""

from __future__ import annotations

import torch

_ATTR = "_tunewise_norm_source"


class NormSource:
    """A norm's input and the module, enough to rebuild its output; the rebuilt tensor is cached for the layers
    that share it and freed with the last of them."""

    def __init__(self, module: torch.nn.Module, norm_input: torch.Tensor, shape: torch.Size):
        self.module, self.norm_input, self.shape = module, norm_input, shape
        self.version = norm_input._version  # what save_for_backward would check
        self._rebuilt: torch.Tensor | None = None

    def rebuild(self) -> torch.Tensor:
        if self.norm_input._version != self.version:
            raise RuntimeError(f"the input of {type(self.module).__name__} was modified in place after the forward "
                               "pass; its output cannot be rebuilt for backward (set lora.fused: false)")
        if self._rebuilt is None:
            with torch.no_grad():
                self._rebuilt = type(self.module).forward(self.module, self.norm_input)
        return self._rebuilt


def source_of(x: torch.Tensor) -> NormSource | None:
    """The NormSource of a tagged norm output (not of a view or copy of it), else None."""
    source = getattr(x, _ATTR, None)
    return source if source is not None and source.shape == x.shape else None


def kept_input(saved: torch.Tensor | None, source: NormSource | None, x_shape: torch.Size) -> torch.Tensor:
    """A fused function's input as (tokens x features) in backward: the saved tensor, or the rebuilt norm output."""
    return saved if source is None else source.rebuild().reshape(-1, x_shape[-1])


def _tag(module: torch.nn.Module, args: tuple, output):
    if (torch.is_grad_enabled() and isinstance(output, torch.Tensor) and args
            and isinstance(args[0], torch.Tensor) and not any(p.requires_grad for p in module.parameters())):
        setattr(output, _ATTR, NormSource(module, args[0], output.shape))


def install(model: torch.nn.Module) -> int:
    """Tag the outputs of every RMSNorm of `model` (by class name: LlamaRMSNorm, Qwen2RMSNorm, ...); the count."""
    count = 0
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm") and not getattr(module, "_tunewise_tags", False):
            module.register_forward_hook(_tag)
            module._tunewise_tags = True
            count += 1
    return count
