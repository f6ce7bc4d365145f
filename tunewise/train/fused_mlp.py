"""A gated (SwiGLU) MLP whose three projections carry LoRA, in one autograd function that keeps less for backward.

Through its modules, `down(silu(gate(x)) * up(x))` keeps four (tokens x intermediate) tensors per layer for
backward: gate's output (for SiLU), SiLU's output and up's output (for the product), and the product (for down's
A-factor gradient). With a frozen base those are most of LoRA's activation memory on a Llama-shaped model
(intermediate ~2.7x hidden). This function keeps only gate's and up's outputs and recomputes SiLU and the product in
backward: two elementwise passes buy back half of the MLP's saved activations. It also multiplies the input by
gate's and up's A factors in one matmul, since they share it.

The maths is PEFT's: each projection is `x W^T + bias + scaling * (x A^T) B^T`. `install(model)` routes an MLP here
only when all three projections are PEFT lora.Linear layers that tunewise.adapters.forward.lora_parts accepts and the activation is
SiLU, and the module's own forward is that very expression (checked on its syntax tree); any other call takes the
module's own forward.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import types

import torch
import torch.nn.functional as F

from tunewise.adapters.forward import add_low_rank_, is_lora_linear, lora_linear, lora_parts, project
from tunewise.train.norm_source import kept_input, source_of


class LoraSwiGLUFunction(torch.autograd.Function):
    """y = down(silu(gate(x)) * up(x)) with each projection `x W^T + b + s (x A^T) B^T`, x of any leading shape.

    Arguments: x, then (weight, bias, A, B) for gate, up and down, then the three scalings as a tuple, and
    x's NormSource when x is a frozen norm's output (norm_source.py: rebuilt in backward instead of kept).
    """

    @staticmethod
    def forward(ctx, x, wg, bg, ag, bbg, wu, bu, au, bbu, wd, bd, ad, bbd, scalings, source=None):
        sg, su, sd = scalings
        rank_g = ag.shape[0]
        flat = x.reshape(-1, x.shape[-1])
        low_gu = flat @ torch.cat([ag, au]).t()  # (tokens, r_gate + r_up): one read of x for both A's
        gate = add_low_rank_(project(flat, wg, bg), low_gu[:, :rank_g], bbg, sg)
        up = add_low_rank_(project(flat, wu, bu), low_gu[:, rank_g:], bbu, su)
        prod = F.silu(gate).mul_(up)
        out, low_d = lora_linear(prod, wd, bd, ad, bbd, sd)
        ctx.save_for_backward(None if source is not None else flat, gate, up, low_gu, low_d, wg, ag, bbg, wu, au, bbu,
                              wd, ad, bbd)
        ctx.scalings, ctx.x_shape, ctx.source = scalings, x.shape, source
        return out.reshape(*x.shape[:-1], wd.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        flat, gate, up, low_gu, low_d, wg, ag, bbg, wu, au, bbu, wd, ad, bbd = ctx.saved_tensors
        flat = kept_input(flat, ctx.source, ctx.x_shape)
        sg, su, sd = ctx.scalings
        need = ctx.needs_input_grad
        rank_g = ag.shape[0]
        grads: list[torch.Tensor | None] = [None] * 14
        g_out = grad_out.reshape(-1, grad_out.shape[-1])

        # recompute what forward did not keep: SiLU(gate) and the product down took as input
        silu = F.silu(gate)
        prod = silu * up

        # down
        g_low_d = (g_out @ bbd).mul_(sd)
        if need[12]:
            grads[12] = (g_out.t() @ low_d).mul_(sd)
        if need[11]:
            grads[11] = g_low_d.t() @ prod
        if need[9]:
            grads[9] = g_out.t() @ prod
        if need[10]:
            grads[10] = g_out.sum(0)
        del prod
        g_prod = (g_out @ wd).addmm_(g_low_d, ad)

        # the product, then SiLU through aten's own backward kernel (one pass, the op autograd would have used)
        g_up = g_prod * silu
        del silu
        g_gate = torch.ops.aten.silu_backward(g_prod.mul_(up), gate)

        # gate and up
        g_low_gu = torch.cat([(g_gate @ bbg).mul_(sg), (g_up @ bbu).mul_(su)], dim=1)
        if need[4]:
            grads[4] = (g_gate.t() @ low_gu[:, :rank_g]).mul_(sg)
        if need[8]:
            grads[8] = (g_up.t() @ low_gu[:, rank_g:]).mul_(su)
        if need[3] or need[7]:
            grad_a = g_low_gu.t() @ flat
            grads[3], grads[7] = grad_a[:rank_g], grad_a[rank_g:]
        if need[1]:
            grads[1] = g_gate.t() @ flat
        if need[5]:
            grads[5] = g_up.t() @ flat
        if need[2]:
            grads[2] = g_gate.sum(0)
        if need[6]:
            grads[6] = g_up.sum(0)
        if need[0]:
            grad_x = (g_gate @ wg).addmm_(g_up, wu).addmm_(g_low_gu, torch.cat([ag, au]))
            grads[0] = grad_x.reshape(ctx.x_shape)
        return (*grads, *[None] * (len(ctx.needs_input_grad) - 14))


# The one forward this function reproduces (Llama, Mistral, Qwen2/3, SmolLM and their copies in transformers).
_GATED_FORWARD = "self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))"


@functools.cache
def _computes_gated_mlp(cls: type) -> bool:
    """Whether cls.forward returns exactly _GATED_FORWARD (directly or through one local name), by its syntax tree."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
    except (OSError, TypeError, SyntaxError):
        return False
    body = [s for s in tree.body[0].body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None:
        return ast.unparse(body[0].value) == _GATED_FORWARD
    if (len(body) == 2 and isinstance(body[0], ast.Assign) and len(body[0].targets) == 1
            and isinstance(body[0].targets[0], ast.Name) and isinstance(body[1], ast.Return)
            and isinstance(body[1].value, ast.Name) and body[1].value.id == body[0].targets[0].id):
        return ast.unparse(body[0].value) == _GATED_FORWARD
    return False


def _is_silu(act) -> bool:
    return isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"


def fused_mlp_call(mlp, x: torch.Tensor) -> torch.Tensor | None:
    """The MLP's output through LoraSwiGLUFunction, or None when this call needs the modules' own forwards."""
    parts = [lora_parts(mlp.gate_proj, x), lora_parts(mlp.up_proj, x), lora_parts(mlp.down_proj, x)]
    if any(p is None for p in parts):
        return None
    (wg, bg, ag, bbg, s_g), (wu, bu, au, bbu, s_u), (wd, bd, ad, bbd, s_d) = parts
    return LoraSwiGLUFunction.apply(x, wg, bg, ag, bbg, wu, bu, au, bbu, wd, bd, ad, bbd, (s_g, s_u, s_d),
                                    source_of(x))


def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    out = None if args or kwargs else fused_mlp_call(self, x)
    return out if out is not None else type(self).forward(self, x, *args, **kwargs)


def install(model: torch.nn.Module) -> int:
    """Route every gated SiLU MLP whose three projections are PEFT lora.Linear layers through the fused function;
    the number routed."""
    count = 0
    for module in model.modules():
        projections = [getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
        if (all(is_lora_linear(p) for p in projections) and _is_silu(getattr(module, "act_fn", None))
                and _computes_gated_mlp(type(module))):
            module.forward = types.MethodType(_forward, module)
            count += 1
    return count
