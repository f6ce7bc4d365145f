"""The fused LoRA SwiGLU MLP (tunewise/train/fused_mlp.py) computes what the modules compute, and keeps less."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tunewise.train import fused_lora, fused_mlp
from tunewise.train.fused_mlp import LoraSwiGLUFunction, fused_mlp_call


@pytest.mark.parametrize("bias", [True, False])
def test_function_gradients_by_finite_differences(bias):
    torch.manual_seed(0)
    d = dict(dtype=torch.float64, requires_grad=True)
    hidden, inter = 5, 7

    def proj(n_in, n_out, rank):
        return (torch.randn(n_out, n_in, **d), torch.randn(n_out, **d) if bias else None,
                torch.randn(rank, n_in, **d), torch.randn(n_out, rank, **d))

    x = torch.randn(2, 3, hidden, **d)
    # different ranks for gate and up, so a wrong split of their shared A product shows
    tensors = (x, *proj(hidden, inter, 2), *proj(hidden, inter, 3), *proj(inter, hidden, 2))
    assert torch.autograd.gradcheck(lambda *t: LoraSwiGLUFunction.apply(*t, (0.7, 1.3, 0.4)), tensors)


def _micro_mlp_model(dropout: float = 0.0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                             target_modules="all-linear"))
    with torch.no_grad():  # B = 0 at init would hide a wrong B or A gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    return model


def test_model_matches_the_unfused_forward_and_gradients():
    model = _micro_mlp_model()
    ids = torch.randint(0, 50, (3, 9))

    def run():
        model.zero_grad()
        out = model(input_ids=ids).logits
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref_out, ref_grads = run()
    assert fused_lora.install(model) == 14 and fused_mlp.install(model) == 2
    out, grads = run()
    assert torch.allclose(out, ref_out, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) == 28  # A and B of 7 modules x 2 layers
    for name in grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-5), name


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for backward while fn() runs."""
    kept: dict[int, int] = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(kept.values())


def test_it_keeps_half_the_mlp_activations():
    model = _micro_mlp_model()
    mlp = model.base_model.model.model.layers[0].mlp
    x = torch.randn(64, 16, requires_grad=True)  # 64 tokens: activations, not weights, dominate what is kept
    through_modules = _saved_bytes(lambda: type(mlp).forward(mlp, x))
    fused = _saved_bytes(lambda: fused_mlp_call(mlp, x))
    weights = sum(p.numel() * 4 for p in mlp.parameters())
    inter = 64 * 40 * 4  # one (tokens x intermediate) fp32 tensor
    # the modules keep gate, SiLU(gate), up and the product; the fused function gate and up (plus x, rank-r tensors)
    assert through_modules - fused >= 2 * inter - weights // 8, (through_modules, fused)


@pytest.mark.parametrize("case", ["dropout", "merged", "one projection not adapted", "another forward", "gelu"])
def test_mlps_it_cannot_compute_exactly_keep_their_own_forward(case):
    model = _micro_mlp_model(dropout=0.1 if case == "dropout" else 0.0)
    mlp = model.base_model.model.model.layers[0].mlp
    x = torch.randn(4, 16)
    if case == "dropout":
        assert fused_mlp_call(mlp, x) is None
        return
    if case == "merged":
        mlp.up_proj.merge()
        assert fused_mlp_call(mlp, x) is None
        return
    if case == "one projection not adapted":
        mlp.down_proj = mlp.down_proj.base_layer
    if case == "another forward":
        class ScaledMLP(type(mlp)):
            def forward(self, x):
                return 2 * self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        for layer in model.base_model.model.model.layers:
            layer.mlp.__class__ = ScaledMLP
    if case == "gelu":
        for layer in model.base_model.model.model.layers:
            layer.mlp.act_fn = torch.nn.GELU()
    assert fused_mlp.install(model) == (1 if case == "one projection not adapted" else 0)
