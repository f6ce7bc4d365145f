"""tunewise.adapters on its own: the config checks need no tensor, the tensor checks no file (serve and merge
both call check_adapter, which runs the two in that order; test_serve and test_merge check it on real folders)."""

from __future__ import annotations

import pytest
import torch

from tunewise.adapters import AdapterRefused, AdapterTensors, BaseInfo, check_config, check_tensors

Q = "model.layers.0.self_attn.q_proj"
BASE = BaseInfo("tiny", None, {}, torch.float32, modules={Q: ("linear", 8, 6)},
                params={f"{Q}.weight": (6, 8), "lm_head.weight": (10, 8)})
CFG = {"peft_type": "LORA", "base_model_name_or_path": "tiny", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}


def refusal(fn, *args, **kwargs) -> AdapterRefused:
    with pytest.raises(AdapterRefused) as e:
        fn(*args, **kwargs)
    return e.value


def test_config_checks_refuse_what_the_config_alone_decides():
    check_config("a", CFG, BASE)
    assert refusal(check_config, "a", {**CFG, "base_model_name_or_path": "other-base"}, BASE).code == "wrong_base"
    assert "rank r=0" in refusal(check_config, "a", {**CFG, "r": 0}, BASE).reason
    assert "lora_alpha=0" in refusal(check_config, "a", {**CFG, "lora_alpha": 0}, BASE).reason
    assert refusal(check_config, "a", {**CFG, "target_modules": ["k_proj"]}, BASE).reason == \
        "adapter 'a' targets modules the base does not have: ['k_proj']"
    assert "PEFT cannot mix" in refusal(check_config, "a", {**CFG, "use_dora": True}, BASE).reason
    check_config("a", {**CFG, "use_dora": True}, BASE, mixed_batches=False)  # merging can fold DoRA in


def lora(a: torch.Tensor, b: torch.Tensor) -> AdapterTensors:
    return AdapterTensors(lora={Q: {"lora_A": a, "lora_B": b}}, dtypes={a.dtype, b.dtype})


def test_tensor_checks_refuse_shapes_values_and_no_ops():
    check_tensors("a", lora(torch.ones(2, 8), torch.ones(6, 2)), CFG, BASE)
    assert refusal(check_tensors, "a", lora(torch.ones(3, 8), torch.ones(6, 3)), CFG, BASE).reason == (
        f"adapter 'a': '{Q}' has lora_A (3, 8) and lora_B (6, 3), but rank 2 on this base's linear (8 -> 6) "
        "needs (2, 8) and (6, 2)")
    check_tensors("a", lora(torch.ones(3, 8), torch.ones(6, 3)), {**CFG, "rank_pattern": {"q_proj": 3}}, BASE)
    assert refusal(check_tensors, "a", lora(torch.ones(2, 8), torch.zeros(6, 2)), CFG, BASE).code == "noop_adapter"
    nan = torch.ones(6, 2)
    nan[0, 0] = float("nan")
    assert "NaN" in refusal(check_tensors, "a", lora(torch.ones(2, 8), nan), CFG, BASE).reason
    ints = lora(torch.ones(2, 8, dtype=torch.int32), torch.ones(6, 2, dtype=torch.int32))
    assert "stores tensors as torch.int32" in refusal(check_tensors, "a", ints, CFG, BASE).reason
    saved = AdapterTensors(other={"base_model.model.lm_head.weight": torch.ones(10, 8)}, dtypes={torch.float32})
    check_tensors("a", saved, CFG, BASE)  # modules_to_save: a full module that replaces the base's
    wrong = AdapterTensors(other={"base_model.model.lm_head.weight": torch.ones(9, 8)}, dtypes={torch.float32})
    assert refusal(check_tensors, "a", wrong, CFG, BASE).code == "wrong_base"
    assert "holds no LoRA weights" in refusal(check_tensors, "a", AdapterTensors(), CFG, BASE).reason
