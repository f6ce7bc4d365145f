"""Frozen norm outputs rebuilt in backward (tunewise/train/norm_source.py): the same gradients, less kept."""

from __future__ import annotations

import pytest
import torch
from test_fused_mlp import _micro_mlp_model, _saved_bytes

from tunewise.train import fused_lora, fused_mlp, norm_source


def _run(model, ids):
    model.zero_grad()
    out = model(input_ids=ids).logits
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_rebuilt_norm_outputs_give_bitwise_the_same_gradients():
    model = _micro_mlp_model()
    ids = torch.randint(0, 50, (3, 9))
    fused_lora.install(model)
    fused_mlp.install(model)
    ref_out, ref_grads = _run(model, ids)
    assert norm_source.install(model) == 5  # two per layer and the final norm
    out, grads = _run(model, ids)
    assert torch.equal(out, ref_out)
    assert grads.keys() == ref_grads.keys() and len(grads) == 28
    for name in grads:
        assert torch.equal(grads[name], ref_grads[name]), name


def test_the_norm_outputs_are_no_longer_kept():
    model = _micro_mlp_model()
    fused_lora.install(model)
    fused_mlp.install(model)
    ids = torch.randint(0, 50, (4, 64))
    kept = _saved_bytes(lambda: model(input_ids=ids))
    norm_source.install(model)
    rebuilt = _saved_bytes(lambda: model(input_ids=ids))
    one_norm_output = 4 * 64 * 16 * 4  # (tokens x hidden) fp32
    # two norm outputs per layer, two layers; the final norm feeds the frozen head, which keeps its input
    assert kept - rebuilt >= 4 * one_norm_output - 1024, (kept, rebuilt)


def test_an_input_changed_in_place_after_forward_is_refused():
    model = _micro_mlp_model()
    fused_lora.install(model)
    norm_source.install(model)
    norm = model.base_model.model.model.layers[0].input_layernorm
    attn = model.base_model.model.model.layers[0].self_attn
    x = torch.randn(2, 5, 16, requires_grad=True)
    h = x * 1.0
    y = attn.q_proj(norm(h))
    with torch.no_grad():
        h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        y.sum().backward()
