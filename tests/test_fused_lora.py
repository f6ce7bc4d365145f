"""The fused LoRA layer (tunewise/train/fused_lora.py) computes exactly what PEFT's forward computes."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_train import cfg_for, make_data, metrics

from tunewise.train.fused_lora import LoraLinearFunction, fused_call, install


@pytest.mark.parametrize("bias", [True, False])
def test_function_gradients_by_finite_differences(bias):
    torch.manual_seed(0)
    d = dict(dtype=torch.float64)
    x = torch.randn(2, 3, 5, **d, requires_grad=True)
    w = torch.randn(4, 5, **d, requires_grad=True)
    b = torch.randn(4, **d, requires_grad=True) if bias else None
    a, bb = torch.randn(2, 5, **d, requires_grad=True), torch.randn(4, 2, **d, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: LoraLinearFunction.apply(*t, 0.7), (x, w, b, a, bb))


def _peft_layer(dropout: float = 0.0, **kw):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=True))
    model = get_peft_model(net, LoraConfig(r=3, lora_alpha=6, lora_dropout=dropout, target_modules=["0"], **kw))
    with torch.no_grad():
        model.base_model.model[0].lora_B["default"].weight.normal_()  # B = 0 at init would hide a wrong B gradient
    return model, model.base_model.model[0]


def test_layer_matches_peft_forward_and_gradients():
    model, layer = _peft_layer()
    x = torch.randn(2, 7, 6, requires_grad=True)

    def run():
        model.zero_grad()
        x.grad = None
        out = layer(x)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out.detach(), x.grad.clone(), grads

    ref_out, ref_x, ref_grads = run()
    assert install(model) == 1
    out, gx, grads = run()
    assert torch.allclose(out, ref_out, atol=1e-6) and torch.allclose(gx, ref_x, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) == 2  # lora_A and lora_B; the base stays frozen
    for name in grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-6), name


@pytest.mark.parametrize("case", ["dropout", "disabled", "merged", "bf16 input"])
def test_calls_it_cannot_compute_exactly_go_to_peft(case):
    model, layer = _peft_layer(dropout=0.1 if case == "dropout" else 0.0)
    x = torch.randn(3, 6)
    if case == "disabled":
        with model.disable_adapter():
            assert fused_call(layer, x) is None
        return
    if case == "merged":
        layer.merge()
    if case == "bf16 input":
        x = x.bfloat16()
    assert fused_call(layer, x) is None
    assert fused_call(_peft_layer()[1], torch.randn(3, 6)) is not None  # the plain case does take the fused path


def test_training_with_and_without_fusion_gives_the_same_losses(micro_llama_dir, tmp_path):
    """A few steps of a real run: the fused layers change no loss beyond float rounding (issue 20)."""
    from tunewise.train import train

    data = make_data(tmp_path, n=24)
    losses = {}
    for fused in (False, True):
        cfg = cfg_for(micro_llama_dir, data, max_steps=3, extra={"lora": {"r": 4, "fused": fused}})
        train(cfg, tmp_path / f"run-{fused}", quiet=True)
        losses[fused] = [m["loss"] for m in metrics(tmp_path / f"run-{fused}") if "loss" in m]
        saved = json.loads((tmp_path / f"run-{fused}" / "adapter" / "adapter_config.json").read_text())
        assert saved["r"] == 4  # the saved adapter is PEFT's own either way
    assert len(losses[True]) == 3
    for a, b in zip(losses[False], losses[True], strict=True):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), losses
