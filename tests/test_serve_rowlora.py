"""Per-row LoRA (bmm over rows) gives the same logits as PEFT's mixed-adapter forward, and knows what it covers."""

from __future__ import annotations

import pytest
import torch

from tunewise.serve.batching import BASE_ROW, left_pad, wrap_base
from tunewise.serve.rowlora import RowLoRA, covers


def save_lora(base_dir, out, **cfg):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(len(str(out)))
    m = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    get_peft_model(m, LoraConfig(init_lora_weights=False, **cfg)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model(tiny_base_dir, tmp_path_factory):
    """The tiny base with three adapters of different ranks, scalings and target modules."""
    from tunewise.models import load_base

    root = tmp_path_factory.mktemp("rowlora")
    specs = {"r2": {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]},
             "r8": {"r": 8, "lora_alpha": 8, "target_modules": ["q_proj", "o_proj", "down_proj"], "use_rslora": True},
             "pat": {"r": 4, "lora_alpha": 16, "target_modules": ["v_proj", "up_proj"],
                     "rank_pattern": {"up_proj": 6}, "alpha_pattern": {"v_proj": 2}}}
    base, _ = load_base(str(tiny_base_dir), dtype="fp32", device="cpu")
    m = wrap_base(base)
    for name, cfg in specs.items():
        m.load_adapter(str(save_lora(tiny_base_dir, root / name, **cfg)), adapter_name=name, is_trainable=False)
    m.eval()
    return m


@pytest.mark.parametrize("shape", ["prefill", "one token per row"])
def test_row_lora_equals_peft_mixed_batches(model, shape):
    rows = [[5, 9, 14, 3], [7, 7], [11, 4, 8], [2, 6, 5, 9, 1], [3]]
    if shape == "one token per row":  # a decoding step's shape: the side-by-side path, no gather
        rows = [r[:1] for r in rows]
    adapters = ["r2", None, "r8", "pat", "r2"]
    ids, mask = left_pad(rows, pad_id=1)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask,
                     adapter_names=[a or BASE_ROW for a in adapters]).logits
        rl = RowLoRA(model)
        rl.rebuild(["r2", "r8", "pat"])
        with rl.routing(adapters):
            got = model(input_ids=ids, attention_mask=mask).logits
        plain = model(input_ids=ids, attention_mask=mask).logits  # outside routing: the base for every row
        base_only = model(input_ids=ids, attention_mask=mask, adapter_names=[BASE_ROW] * len(rows)).logits
    real = mask.bool()
    assert torch.allclose(got[real], want[real], atol=1e-5)
    assert torch.allclose(plain[real], base_only[real], atol=1e-6)
    assert not torch.allclose(got[real], plain[real], atol=1e-3)  # the adapters really change the answer


def test_covers_plain_linear_lora_only(model, tiny_base_dir, tmp_path):
    from tunewise.models import load_base

    assert covers(model, "r2") and covers(model, "r8") and covers(model, "pat")
    base, _ = load_base(str(tiny_base_dir), dtype="fp32", device="cpu")
    m = wrap_base(base)
    for name, cfg in {"mts": {"modules_to_save": ["lm_head"]}, "bias": {"lora_bias": True}}.items():
        m.load_adapter(str(save_lora(tiny_base_dir, tmp_path / name, r=2, target_modules=["q_proj"], **cfg)),
                       adapter_name=name, is_trainable=False)
    assert not covers(m, "mts")  # its lm_head copy replaces a whole module: PEFT's mixed forward does that
    assert not covers(m, "bias")


def test_a_sliding_window_base_is_refused_before_serving(tmp_path, tiny_base_dir):
    """The batcher merges KV rows of plain caches only: a sliding-window base is refused up front, by name."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from tunewise.errors import TunewiseError
    from tunewise.serve.app import build_server

    tok = AutoTokenizer.from_pretrained(tiny_base_dir)
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=2, sliding_window=16,
                        max_position_embeddings=128, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    MistralForCausalLM(cfg).save_pretrained(tmp_path / "mistral")
    tok.save_pretrained(tmp_path / "mistral")
    with pytest.raises(TunewiseError, match="sliding"):
        build_server(str(tmp_path / "mistral"), dtype="fp32", device="cpu")
