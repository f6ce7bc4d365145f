"""LoRA linear layers in one autograd function: the same maths as PEFT's forward, fewer passes over activations.

PEFT computes `base(x) + B(A(dropout(x))) * scaling` as five separate ops, each writing a new
(tokens x out) tensor: the rank-r product, the scale, the add, and in backward their mirror images plus an add of
the two input gradients. On a CPU those passes are memory-bound and, on a 576-wide model, cost about as much as the
frozen base's weight gradients that LoRA saves (profile: benchmarks/RESULTS.md, issue 20). Here the low-rank term
is accumulated into the base output in place (one `addmm_`), the scale is applied to the small rank-r tensors, and
the LoRA part of the input gradient is accumulated into the base part in place. Only the input and the rank-r
activation are kept for backward, as PEFT keeps them.

`install(model)` swaps the forward of every PEFT `lora.Linear` whose call it can compute exactly (one active
vanilla adapter, no dropout, a plain fp32/bf16 nn.Linear base, no LoRA bias: tunewise.adapters.forward.lora_parts,
which also reads the factors); any other call falls back to PEFT's own forward, so adapters, merging and saving are
untouched.
"""

from __future__ import annotations

import types

import torch

from tunewise.adapters.forward import is_lora_linear, lora_linear, lora_parts
from tunewise.train.norm_source import kept_input, source_of


class LoraLinearFunction(torch.autograd.Function):
    """y = x W^T + bias + scaling * (x A^T) B^T, with x of any leading shape. With a `source` (x is a frozen norm's
    output, norm_source.py), x is rebuilt in backward instead of kept."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float, source=None):
        flat = x.reshape(-1, x.shape[-1])
        out, low = lora_linear(flat, weight, bias, lora_a, lora_b, scaling)
        ctx.save_for_backward(None if source is not None else flat, low, weight, lora_a, lora_b)
        ctx.scaling, ctx.source = scaling, source
        ctx.x_shape = x.shape
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        flat, low, weight, lora_a, lora_b = ctx.saved_tensors
        flat = kept_input(flat, ctx.source, ctx.x_shape)
        need_x, need_w, need_bias, need_a, need_b = ctx.needs_input_grad[:5]
        g = grad_out.reshape(-1, grad_out.shape[-1])
        g_low = (g @ lora_b).mul_(ctx.scaling)  # (tokens, r): the gradient reaching x A^T
        grad_x = grad_w = grad_bias = grad_a = grad_b = None
        if need_x:
            grad_x = g @ weight
            grad_x.addmm_(g_low, lora_a)
            grad_x = grad_x.reshape(ctx.x_shape)
        if need_w:
            grad_w = g.t() @ flat
        if need_bias:
            grad_bias = g.sum(0)
        if need_a:
            grad_a = g_low.t() @ flat
        if need_b:
            grad_b = (g.t() @ low).mul_(ctx.scaling)
        return grad_x, grad_w, grad_bias, grad_a, grad_b, *[None] * (len(ctx.needs_input_grad) - 5)


def fused_call(layer, x: torch.Tensor) -> torch.Tensor | None:
    """The layer's output through LoraLinearFunction, or None when this call needs PEFT's general path."""
    parts = lora_parts(layer, x)
    return None if parts is None else LoraLinearFunction.apply(x, *parts, source_of(x))


def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    out = None if args or kwargs else fused_call(self, x)
    return out if out is not None else type(self).forward(self, x, *args, **kwargs)


def install(model: torch.nn.Module) -> int:
    """Route every PEFT lora.Linear of `model` through the fused function where it applies; the number routed."""
    count = 0
    for module in model.modules():
        if is_lora_linear(module):
            module.forward = types.MethodType(_forward, module)
            count += 1
    return count
