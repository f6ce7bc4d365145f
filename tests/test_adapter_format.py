"""tunewise.adapters' reading of PEFT's format against PEFT itself: a real adapter saved by PEFT, read back through
format.py, gives per module (delta.py) exactly the weight change PEFT's own merge makes, with plain scaling, rsLoRA,
per-module alphas and ranks, and on an embedding (stored transposed)."""

from __future__ import annotations

import copy

import pytest
import torch

from tunewise.adapters import delta, format, forward


class Toy(torch.nn.Module):
    """Named like a decoder's pieces, small enough to merge in milliseconds."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 8)
        self.q_proj = torch.nn.Linear(8, 6)
        self.v_proj = torch.nn.Linear(8, 5, bias=False)

    def forward(self, ids):
        h = self.embed(ids)
        return self.q_proj(h).sum() + self.v_proj(h).sum()


MODULES = ("embed", "q_proj", "v_proj")


def peft_adapter(tmp_path, **lora):
    """(saved adapter folder, PEFT's merged weight minus the base's, per module) for a LoRA with random B."""
    from peft import LoraConfig, get_peft_model

    base = Toy()
    before = {m: getattr(base, m).weight.detach().clone() for m in MODULES}
    cfg = LoraConfig(target_modules=list(MODULES), init_lora_weights=False, **lora)
    model = get_peft_model(copy.deepcopy(base), cfg)
    model.save_pretrained(str(tmp_path))
    merged = model.merge_and_unload()
    return tmp_path, {m: getattr(merged, m).weight.detach() - before[m] for m in MODULES}


@pytest.mark.parametrize("lora", [
    {"r": 4, "lora_alpha": 8},
    {"r": 4, "lora_alpha": 8, "use_rslora": True},
    {"r": 2, "lora_alpha": 3, "rank_pattern": {"v_proj": 3}, "alpha_pattern": {"q_proj": 5}},
    {"r": 3, "lora_alpha": 6, "rank_pattern": {"q_proj": 1}, "alpha_pattern": {"v_proj": 2}, "use_rslora": True},
], ids=["alpha/r", "rslora", "patterns", "patterns+rslora"])
def test_owner_delta_is_peft_merge(tmp_path, lora):
    folder, merged_delta = peft_adapter(tmp_path, **lora)
    cfg, tensors = format.read_adapter(folder)
    seen = set()
    for key, a in tensors.items():
        k = format.parse_key(key)
        assert k is not None and k.prefixed, key
        if not k.is_a:
            continue
        b = tensors[format.partner(key)]
        scale = delta.module_scaling(cfg, k.module, a.shape[0])
        got = delta.delta(a, b, scale, transposed=k.embedding)
        torch.testing.assert_close(got, merged_delta[k.module], rtol=1e-5, atol=1e-6)
        seen.add(k.module)
    assert seen == set(MODULES)


def test_live_factors_match_the_saved_ones(tmp_path):
    """forward.factors reads a live layer's (A, B, scaling) as PEFT applies them: its forward's change is
    scaling * (x A^T) B^T."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(Toy(), LoraConfig(r=4, lora_alpha=2, use_rslora=True, target_modules=["q_proj"],
                                             init_lora_weights=False))
    layer = model.base_model.model.q_proj
    a, b, scale = forward.factors(layer, "default")
    assert scale == pytest.approx(delta.scaling(2, 4, rslora=True)) == pytest.approx(1.0)
    x = torch.randn(3, 8)
    out, _ = forward.lora_linear(x, layer.base_layer.weight, layer.base_layer.bias, a, b, scale)
    torch.testing.assert_close(out, layer(x))


def test_keys_parse_and_pair():
    k = format.parse_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
    assert (k.module, k.factor, k.prefixed) == ("model.layers.0.self_attn.q_proj", "A", True)
    assert format.partner("base_model.model.emb.lora_embedding_A") == "base_model.model.emb.lora_embedding_B"
    assert format.parse_key("base_model.model.lm_head.weight") is None
    assert format.is_lora_b("base_model.model.q_proj.lora_B.default.weight")
    assert not format.is_lora_b("base_model.model.q_proj.lora_A.default.weight")
    assert delta.alpha_for_rank_division({"r": 4, "lora_alpha": 4, "use_rslora": True}) == pytest.approx(8.0)


def test_lora_b_names_are_peft_s():
    """LoRA+ picks the B factors by a live PEFT model's parameter names (train/methods.py)."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(Toy(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    b = {n for n, p in model.named_parameters() if p.requires_grad and format.is_lora_b(n)}
    assert b == {n for n, p in model.named_parameters() if p.requires_grad and ".lora_B." in n}
    assert len(b) == 2
