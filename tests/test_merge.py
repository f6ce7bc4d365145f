"""`tunewise merge`: merged folders reload with from_pretrained and match the adapter model; QLoRA drift reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml


@pytest.fixture(scope="module")
def micro_base(micro_llama_dir) -> Path:
    return micro_llama_dir


@pytest.fixture(scope="module")
def adapter(micro_base, tmp_path_factory) -> Path:
    """A LoRA adapter with random (non-zero) A and B on every linear layer: merging it changes every weight."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    m = AutoModelForCausalLM.from_pretrained(micro_base, dtype=torch.float32)
    pm = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"]))
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    pm.save_pretrained(out)
    return out


def test_merge_lora_reloads_and_matches(adapter, micro_base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.evaluate.generation import greedy_generate
    from tunewise.merge import PROBES, merge_adapter

    out = tmp_path / "merged"
    r = merge_adapter(adapter, out)
    assert r.method == "lora" and r.verified and r.max_abs_diff <= 1e-4 and r.probes == len(PROBES)
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert json.loads((out / "merge.json").read_text())["max_abs_diff"] == r.max_abs_diff
    assert not (out / "adapter_config.json").exists()

    # Independently of merge(): the folder loads with plain from_pretrained and behaves like the adapter.
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(micro_base, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, str(adapter))
    ids = tok(PROBES[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        diff = (merged(ids).logits - adapted(ids).logits).abs().max().item()
    assert diff <= 1e-4
    with adapted.disable_adapter(), torch.no_grad():
        changed = (merged(ids).logits - adapted(ids).logits).abs().max().item()
    assert changed > 1e-3  # the adapter really did something, so the match above means something
    assert greedy_generate(merged, tok, PROBES, 5) == greedy_generate(adapted, tok, PROBES, 5)


@pytest.mark.parametrize("kind", ["trainable_tokens", "dora"])
def test_merge_adapters_the_server_refuses(kind, micro_base, tmp_path):
    """DoRA and trainable token rows cannot be mixed per request in a batch, so `serve` refuses them and says to merge
    them instead: merging must take them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunewise.adapters import AdapterRefused, BaseInfo, check_adapter
    from tunewise.merge import merge_adapter

    torch.manual_seed(2)
    m = AutoModelForCausalLM.from_pretrained(micro_base, dtype=torch.float32)
    extra = {"trainable_token_indices": [5, 9]} if kind == "trainable_tokens" else {"use_dora": True}
    pm = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj"],
                                      **extra))
    if kind == "trainable_tokens":
        with torch.no_grad():
            next(p for n, p in pm.named_parameters() if "trainable_tokens_delta" in n).add_(0.5)
    adapter = tmp_path / "adapter"
    pm.save_pretrained(adapter)
    info = BaseInfo.from_model(AutoModelForCausalLM.from_pretrained(micro_base), "micro", micro_base)
    check_adapter("a", adapter, info, mixed_batches=False)  # fits the base
    with pytest.raises(AdapterRefused, match="tunewise merge"):
        check_adapter("a", adapter, info)
    r = merge_adapter(adapter, tmp_path / "merged")
    assert r.verified and r.max_abs_diff <= 1e-4
    if kind == "trainable_tokens":  # rows that do not match the config's indices are refused, not merged wrongly
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        for rows in ([5, 9, 11], ["5", "9"], [5, 10**6]):
            (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "trainable_token_indices": rows}))
            with pytest.raises(AdapterRefused, match="do not fit"):
                check_adapter("a", adapter, info, mixed_batches=False)


def test_merge_cli_and_refusals(adapter, micro_base, tmp_path):
    from typer.testing import CliRunner

    from tunewise.cli import app
    from tunewise.errors import TunewiseError
    from tunewise.merge import merge_adapter

    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["merge", str(adapter), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["verified"] is True
    mine = tmp_path / "mine"  # a folder tunewise did not write is refused (its own merge may be replaced)
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(TunewiseError, match="not empty"):
        merge_adapter(adapter, mine)
    assert (mine / "notes.txt").read_text() == "keep"
    with pytest.raises(TunewiseError, match="already a full model"):
        merge_adapter(micro_base, tmp_path / "x")
    pickled = tmp_path / "pickled"
    shutil.copytree(adapter, pickled)
    from safetensors.torch import load_file

    torch.save(load_file(pickled / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    (pickled / "adapter_model.safetensors").unlink()
    with pytest.raises(TunewiseError, match="pickle"):
        merge_adapter(pickled, tmp_path / "y")
    assert not (tmp_path / "y").exists()
    # A merge over the tolerance is refused and leaves nothing behind (a negative tolerance forces it).
    with pytest.raises(TunewiseError, match="over the tolerance"):
        merge_adapter(adapter, tmp_path / "z", tolerance=-1.0)
    assert not (tmp_path / "z").exists() and not (tmp_path / ".z.tmp").exists()


def test_merge_qlora_into_dequantised_base(adapter, micro_base, tmp_path):
    """A QLoRA run dir: merged into dequant(NF4(W)), which tracks the 4-bit adapter model better than W does."""
    from tunewise.merge import merge_adapter

    run = tmp_path / "run"
    (run / "adapter").parent.mkdir(parents=True)
    shutil.copytree(adapter, run / "adapter")
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "qlora", "base": str(micro_base),
                                                     "data": {"train": "train.jsonl"}}))
    r = merge_adapter(run, tmp_path / "merged-q")
    assert r.method == "qlora" and r.diff_if_merged_into_original_base is not None
    assert r.max_abs_diff < r.diff_if_merged_into_original_base
    assert (tmp_path / "merged-q" / "model.safetensors").is_file()
    report = json.loads((tmp_path / "merged-q" / "merge.json").read_text())
    assert report["method"] == "qlora" and report["max_abs_diff"] == r.max_abs_diff


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_merge_dtype_rounds_after_a_checked_fp32_merge(adapter, dtype, tmp_path):
    """--dtype bf16/fp16: the fp32 merge is checked, the file holds exactly the rounded merge, the rounding's cost
    is reported; the default is the base's own dtype (fp32 for this base, bf16 for the shipped tiny base)."""
    from safetensors.torch import load_file

    from tunewise.merge import base_dtype, merge_adapter

    r = merge_adapter(adapter, tmp_path / "m", dtype=dtype)
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert r.verified and r.dtype == dtype and r.merge_diff <= 1e-4 and r.file_diff <= 1e-6
    assert r.max_abs_diff > r.merge_diff  # rounding to 16 bits is visible, and reported
    assert {t.dtype for t in load_file(tmp_path / "m" / "model.safetensors").values()} == {want}
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == str(want).replace("torch.", "")
    assert merge_adapter(adapter, tmp_path / "default").dtype == "fp32"  # this micro base was saved in fp32
    assert base_dtype("tiny") == "bf16"


def test_merge_cli_dtype(adapter, tmp_path):
    from typer.testing import CliRunner

    from tunewise.cli import app

    res = CliRunner().invoke(app, ["merge", str(adapter), "--out", str(tmp_path / "m"), "--dtype", "fp16"])
    assert res.exit_code == 0, res.output
    assert "fp32 merge" in res.output and "after rounding to fp16" in res.output
    res = CliRunner().invoke(app, ["merge", str(adapter), "--out", str(tmp_path / "x"), "--dtype", "int8"])
    assert res.exit_code != 0 and "--dtype int8 is not one of" in str(res.exception)
