"""`tunewise export`: GGUF files that llama.cpp's layout rules accept and transformers' GGUF loader reads back as the
model they came from; GGUF LoRA adapters that reproduce the merged model the way llama.cpp applies them; adapter
folders with what PEFT and vLLM read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _random_adapter(base_dir: Path, out: Path, seed: int = 1, **lora_kw) -> Path:
    """A LoRA adapter with random non-zero A and B on every linear layer: it changes every merged weight."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = {"r": 4, "lora_alpha": 8, "init_lora_weights": False, "target_modules": LINEAR, **lora_kw}
    pm = get_peft_model(m, LoraConfig(**cfg))
    with torch.no_grad():  # PEFT's random init is small on purpose; make the adapter's effect clearly visible
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.mul_(4.0)
    pm.save_pretrained(out)
    return out


def _fields(path: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items()}


def _tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a GGUF as float32, in torch layout (rows = output features)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(
        [int(x) for x in reversed(t.shape)]) for t in reader.tensors}


@pytest.fixture(scope="module")
def tiny_adapter(tiny_base_dir, tmp_path_factory) -> Path:
    return _random_adapter(tiny_base_dir, tmp_path_factory.mktemp("tiny_adapter") / "adapter")


# ------------------------------------------------------------------------------------------------- pure pieces


@pytest.mark.parametrize("heads", [1, 3, 4])
def test_rope_permute_is_what_transformers_undoes(heads):
    """Our q/k row order for llama.cpp, undone by transformers' GGUF loader, gives the original rows back (and is
    not the identity, so the test can fail)."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from tunewise.export.llama import rope_permute

    w = torch.randn(heads * 8, 5)
    permuted = rope_permute(w, heads)
    assert not torch.equal(permuted, w)
    back = LlamaTensorProcessor(config={})._reverse_permute_weights(permuted.numpy(), heads, heads)
    assert np.array_equal(back, w.numpy())
    # llama.cpp's rotary pairs are adjacent rows: row 1 of each head is HF's row d/2.
    assert torch.equal(permuted[1], w[4])


def test_pre_tokenizer_is_read_off_the_structure(tiny_base_dir):
    from transformers import AutoTokenizer

    from tunewise.errors import TunewiseError
    from tunewise.export.vocab import pre_tokenizer_name

    tj = json.loads(AutoTokenizer.from_pretrained(tiny_base_dir).backend_tokenizer.to_str())
    # The tiny base isolates spaces and digits; its merges never join either, so llama.cpp's smollm regex is exact.
    assert pre_tokenizer_name(tj, clean_up_spaces=False) == "smollm"
    joined = json.loads(json.dumps(tj))
    joined["model"]["merges"] = [["Ġ", "t"], *tj["model"]["merges"]]  # a merge that joins a space to a letter
    with pytest.raises(TunewiseError, match="isolates every space"):
        pre_tokenizer_name(joined, clean_up_spaces=False)
    meta = json.loads(json.dumps(tj))
    meta["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    with pytest.raises(TunewiseError, match="no llama.cpp"):
        pre_tokenizer_name(meta, clean_up_spaces=False)
    plain = json.loads(json.dumps(tj))
    plain["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    assert pre_tokenizer_name(plain, clean_up_spaces=True) == "gpt-2"
    # Digits never merge here, so splitting them is equally right: smollm (no space clean-up on decode, like HF).
    assert pre_tokenizer_name(plain, clean_up_spaces=False) == "smollm"
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spell = bytes_to_unicode()
    byte_level = lambda text: "".join(spell[b] for b in text.encode())  # noqa: E731
    cjk = json.loads(json.dumps(plain))  # 一 counts as a number for str.isnumeric, not for \p{N}: still neutral
    cjk["model"]["merges"] = [[byte_level("一"), byte_level("个")], *tj["model"]["merges"]]
    assert pre_tokenizer_name(cjk, clean_up_spaces=False) == "smollm"
    digits = json.loads(json.dumps(plain))  # a merge of two digits: only GPT-2's regex keeps "12" together
    digits["model"]["merges"] = [["1", "2"], *tj["model"]["merges"]]
    assert pre_tokenizer_name(digits, clean_up_spaces=False) == "gpt-2"


# ------------------------------------------------------------------------------------------ GGUF of a model


@pytest.mark.integration
def test_gguf_round_trip_of_a_merged_tiny_adapter(tiny_adapter, tiny_base_dir, tmp_path):
    """An adapter on the tiny base, merged and exported as f16: transformers' GGUF loader reads back the logits of
    the f16-rounded merge (to float32 noise), the same tokenizer, and the llama.cpp metadata a llama model needs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.export.run import export_gguf
    from tunewise.merge import PROBES

    out = tmp_path / "model.gguf"
    r = export_gguf(tiny_adapter, out, quant="f16")
    assert r.verified and r.source == "merged adapter" and r.file_diff <= 1e-4 and r.top1_agreement == 1.0
    # What f16 costs against the fp32 merge (reported; 0.03 here: the merged weights are not 16-bit exact).
    assert r.max_abs_diff < 0.1
    assert r.tokenizer_equal and r.chat_template_equal and r.pre_tokenizer == "smollm"
    assert out.is_file() and not list(tmp_path.glob(".*"))  # no temporary file or folder left behind

    # Independently of export(): the adapter model itself vs the file, through transformers' loader.
    tok = AutoTokenizer.from_pretrained(tiny_base_dir)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32),
                                        str(tiny_adapter)).eval()
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, dtype=torch.float32).eval()
    ids = tok(PROBES[0] + " 12 + 30 = 42", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        diff = (loaded(ids).logits - adapted(ids).logits).abs().max().item()
        with adapted.disable_adapter():
            changed = (loaded(ids).logits - adapted(ids).logits).abs().max().item()
    assert diff < 0.1 and changed > 10 * diff  # the adapter model up to f16 rounding, far from the bare base

    f = _fields(out)
    cfg = json.loads((tiny_base_dir / "config.json").read_text())
    assert f["general.architecture"] == "llama" and f["general.type"] == "model"
    assert f["general.file_type"] == 1  # MOSTLY_F16
    assert (f["llama.block_count"], f["llama.embedding_length"], f["llama.feed_forward_length"]) == (
        cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"])
    assert (f["llama.attention.head_count"], f["llama.attention.head_count_kv"]) == (
        cfg["num_attention_heads"], cfg["num_key_value_heads"])
    assert f["llama.context_length"] == cfg["max_position_embeddings"] and f["llama.vocab_size"] == cfg["vocab_size"]
    assert f["llama.rope.freq_base"] == cfg["rope_parameters"]["rope_theta"]
    assert math.isclose(f["llama.attention.layer_norm_rms_epsilon"], cfg["rms_norm_eps"], rel_tol=1e-6)
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "smollm"
    assert len(f["tokenizer.ggml.tokens"]) == cfg["vocab_size"] == len(f["tokenizer.ggml.token_type"])
    assert f["tokenizer.ggml.eos_token_id"] == tok.eos_token_id and f["tokenizer.ggml.padding_token_id"] == 1
    assert "tokenizer.ggml.bos_token_id" not in f and f["tokenizer.ggml.add_bos_token"] is False
    assert f["tokenizer.ggml.token_type"][0] == 3 and f["tokenizer.ggml.token_type"][2] == 1  # CONTROL, NORMAL
    assert len(f["tokenizer.ggml.merges"]) == len(json.loads((tiny_base_dir / "tokenizer.json").read_text())[
        "model"]["merges"])
    names = set(_tensors(out))
    assert "output.weight" not in names  # tied: llama.cpp reuses token_embd.weight
    assert {"token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight", "blk.5.ffn_down.weight"} <= names
    assert len(names) == 2 + 9 * cfg["num_hidden_layers"]


@pytest.mark.integration
def test_gguf_q8_0_is_reported_and_keeps_norms_f32(tmp_path):
    import gguf

    from tunewise.export.run import export_gguf

    r = export_gguf("tiny", tmp_path / "q8.gguf", quant="q8_0")
    assert r.verified and r.file_diff <= 1e-4 and r.tokenizer_equal  # the file holds exactly the Q8_0 weights
    assert 0 < r.max_abs_diff < 1.0 and r.top1_agreement >= 0.9  # reported: 8-bit rounding is visible, not wild
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(tmp_path / "q8.gguf")).tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32


# ------------------------------------------------------------------------------------------ GGUF LoRA


@pytest.mark.integration
@pytest.mark.parametrize("rslora", [False, True])
def test_gguf_lora_applied_as_llama_cpp_does_equals_the_merged_gguf(rslora, tiny_base_dir, tmp_path):
    """base.gguf + alpha/rank * B A for every lora_a/lora_b pair (llama.cpp's rule, in the file's own layout,
    with its q/k row order) equals the merged model's GGUF: names, shapes, permutation and alpha are all right."""
    from tunewise.export.run import export_gguf, export_gguf_lora
    from tunewise.export.verify import check_lora
    from tunewise.models import load_config

    # rsLoRA scales by alpha / sqrt(r): alpha 4 at r 4 is the same scale as plain alpha 8.
    adapter = _random_adapter(tiny_base_dir, tmp_path / "adapter", seed=3, use_rslora=rslora,
                              lora_alpha=4 if rslora else 8)
    export_gguf("tiny", tmp_path / "base.gguf", quant="f32")
    export_gguf(adapter, tmp_path / "merged.gguf", quant="f32")
    r = export_gguf_lora(adapter, tmp_path / "lora.gguf")
    assert r.verified and r.tensors == 2 * 7 * 6
    assert math.isclose(r.lora_alpha, 4 * math.sqrt(4) if rslora else 8)

    f = _fields(tmp_path / "lora.gguf")
    assert (f["general.type"], f["general.architecture"], f["adapter.type"]) == ("adapter", "llama", "lora")
    assert math.isclose(f["adapter.lora.alpha"], r.lora_alpha, rel_tol=1e-6)
    assert check_lora(tmp_path / "lora.gguf", load_config(tiny_base_dir), r.lora_alpha) == []

    base, merged, lora = (_tensors(tmp_path / f"{n}.gguf") for n in ("base", "merged", "lora"))
    pairs = {n.rsplit(".", 1)[0] for n in lora}
    assert pairs == {n for n in base if n.startswith("blk.") and not n.endswith("norm.weight")}
    worst = 0.0
    for name in pairs:
        a, b = lora[f"{name}.lora_a"], lora[f"{name}.lora_b"]  # (r, in), (out, r): ggml [in, r], [r, out]
        assert a.shape == (4, base[name].shape[1]) and b.shape == (base[name].shape[0], 4)
        applied = base[name] + f["adapter.lora.alpha"] / b.shape[1] * (b @ a)
        worst = max(worst, float(np.abs(applied - merged[name]).max()))
        assert not np.allclose(base[name], merged[name], atol=1e-4)
    assert worst < 1e-5


@pytest.mark.integration
def test_gguf_lora_refuses_what_llama_cpp_cannot_hold(tiny_base_dir, tmp_path):
    from tunewise.errors import TunewiseError
    from tunewise.export.run import export_gguf_lora

    dora = _random_adapter(tiny_base_dir, tmp_path / "dora", target_modules=["q_proj", "v_proj"], use_dora=True)
    with pytest.raises(TunewiseError, match="DoRA"):
        export_gguf_lora(dora, tmp_path / "d.gguf")
    with pytest.raises(TunewiseError, match="not an adapter"):
        export_gguf_lora("tiny", tmp_path / "t.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*gguf"))


# ------------------------------------------------------------------------------------------ refusals, CLI


def test_export_refuses_other_architectures_and_bad_outputs(micro_llama_dir, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tunewise.errors import TunewiseError
    from tunewise.export.run import export_gguf

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=2048)).save_pretrained(gpt2)
    AutoTokenizer.from_pretrained(micro_llama_dir).save_pretrained(gpt2)
    with pytest.raises(TunewiseError, match="'gpt2' model is not supported"):
        export_gguf(gpt2, tmp_path / "g.gguf")
    # A classifier is a Llama too, but its head has no place in a llama.cpp model: refused, not silently dropped.
    from transformers import AutoModelForSequenceClassification

    cls = tmp_path / "cls"
    AutoModelForSequenceClassification.from_pretrained(micro_llama_dir, num_labels=3).save_pretrained(cls)
    AutoTokenizer.from_pretrained(micro_llama_dir).save_pretrained(cls)
    with pytest.raises(TunewiseError, match="LlamaForSequenceClassification"):
        export_gguf(cls, tmp_path / "c.gguf")
    with pytest.raises(TunewiseError, match="does not end in .gguf"):
        export_gguf(micro_llama_dir, tmp_path / "model.bin")
    (tmp_path / "exists.gguf").write_bytes(b"keep me")
    with pytest.raises(TunewiseError, match="exists"):
        export_gguf(micro_llama_dir, tmp_path / "exists.gguf")
    assert (tmp_path / "exists.gguf").read_bytes() == b"keep me"
    with pytest.raises(TunewiseError, match="over the tolerance"):  # a negative tolerance: refused, nothing left
        export_gguf(micro_llama_dir, tmp_path / "m.gguf", quant="q8_0", tolerance=-1.0)
    assert not (tmp_path / "m.gguf").exists() and not list(tmp_path.glob(".*"))


@pytest.fixture(scope="module")
def trained_run(tiny_base_dir, tmp_path_factory) -> Path:
    """What `tunewise train` writes for a LoRA run on the tiny base (two steps)."""
    from tunewise.config import validate_config
    from tunewise.train import train

    tmp = tmp_path_factory.mktemp("trained")
    rows = [{"prompt": f"Q: {a} + {b} =", "completion": f" {a + b}"} for a in range(4) for b in range(4)]
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = validate_config({"base": str(tiny_base_dir), "method": "lora", "lora": {"r": 4},
                           "data": {"train": str(data), "max_seq_len": 32},
                           "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-3}})
    train(cfg, tmp / "run", quiet=True)
    return tmp / "run"


@pytest.mark.integration
def test_adapter_folder_has_what_peft_and_vllm_read(trained_run):
    """`vllm serve BASE --enable-lora --lora-modules NAME=PATH` and PEFT read adapter_config.json (peft_type, r,
    lora_alpha, target_modules, base_model_name_or_path; vLLM refuses DoRA, biases, modules_to_save and ranks over
    --max-lora-rank) and adapter_model.safetensors keyed base_model.model.<module>.lora_A/B.weight."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    adapter = trained_run / "adapter"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM"
    assert isinstance(cfg["r"], int) and 0 < cfg["r"] <= 16  # vLLM's default --max-lora-rank is 16
    assert cfg["lora_alpha"] > 0 and set(cfg["target_modules"]) == set(LINEAR)
    base = Path(cfg["base_model_name_or_path"])
    assert (base / "config.json").is_file()  # a path vLLM / PEFT can open as the base
    assert not cfg.get("use_dora") and cfg.get("bias", "none") == "none" and not cfg.get("modules_to_save")
    weights = load_file(adapter / "adapter_model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    modules = {n for n, _ in model.named_modules()}
    n_layers = model.config.num_hidden_layers
    assert len(weights) == 2 * len(LINEAR) * n_layers
    for key, t in weights.items():
        assert key.startswith("base_model.model.") and key.endswith((".lora_A.weight", ".lora_B.weight"))
        module = key[len("base_model.model."):].rsplit(".lora_", 1)[0]
        assert module in modules and module.rsplit(".", 1)[1] in LINEAR
        assert cfg["r"] in t.shape
    assert not [f for f in adapter.iterdir() if f.suffix in (".bin", ".pt", ".pkl")]
    PeftModel.from_pretrained(model, str(adapter))  # and PEFT itself loads it onto the base it names


@pytest.mark.integration
def test_export_cli_on_a_run_directory(trained_run, tmp_path):
    from typer.testing import CliRunner

    from tunewise.cli import app

    res = CliRunner().invoke(app, ["export", str(trained_run), "--out", str(tmp_path / "m.gguf"), "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["verified"] and r["source"] == "merged adapter" and r["file_diff"] <= 1e-4
    res = CliRunner().invoke(app, ["export", str(trained_run), "--format", "gguf-lora", "--out",
                                   str(tmp_path / "a.gguf")])
    assert res.exit_code == 0, res.output
    assert "adapter.lora.alpha = 4" in res.output and (tmp_path / "a.gguf").is_file()
    res = CliRunner().invoke(app, ["export", str(trained_run), "--format", "onnx", "--out", str(tmp_path / "x.gguf")])
    assert res.exit_code != 0 and "--format onnx is not one of gguf, gguf-lora" in str(res.exception)


# ------------------------------------------------------------------------------------------ the real base


@pytest.mark.real
def test_smollm2_gguf_round_trip(tmp_path):
    """SmolLM2-135M-Instruct (30 layers, GQA 9/3 heads, chat template): f16 within 1e-2 of the model, the same
    tokenizer and chat template; its metadata matches the release GGUF llama.cpp's own converter wrote."""
    import gguf

    from tunewise.export.run import export_gguf
    from tunewise.zoo import smollm2

    out = tmp_path / "smollm2.gguf"
    r = export_gguf("smollm2", out, quant="f16")
    assert r.verified and r.file_diff <= 1e-4 and r.tokenizer_equal and r.chat_template_equal
    # f16 rounding of these (de-quantised Q4_1, so not 16-bit exact) weights alone costs ~0.04: reported
    print(f"smollm2 f16: max |logit diff| {r.max_abs_diff:.3g} vs fp32, top-1 {r.top1_agreement:.1%}")
    assert r.max_abs_diff < 0.1
    assert r.chat_template and r.top1_agreement >= 0.99
    ours, release = _fields(out), _fields(smollm2.gguf_path())
    for key in ("general.architecture", "llama.block_count", "llama.context_length", "llama.embedding_length",
                "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
                "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size",
                "llama.rope.dimension_count", "tokenizer.ggml.model", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
                "tokenizer.chat_template", "tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.pre",
                "tokenizer.ggml.token_type"):
        assert ours[key] == release[key], key
    names = {t.name: [int(x) for x in t.shape] for t in gguf.GGUFReader(str(out)).tensors}
    assert names == {t.name: [int(x) for x in t.shape] for t in gguf.GGUFReader(str(smollm2.gguf_path())).tensors}


def test_export_of_a_qlora_run_merges_into_the_dequantised_base(micro_llama_dir, tmp_path):
    """A QLoRA run dir: export merges it the way `tunewise merge` does (into dequant(NF4(W))) and says so."""
    import yaml

    from tunewise.export.run import export_gguf, export_gguf_lora

    run = tmp_path / "run"
    _random_adapter(micro_llama_dir, run / "adapter")
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "qlora", "base": str(micro_llama_dir),
                                                     "data": {"train": "train.jsonl"}}))
    r = export_gguf(run, tmp_path / "q.gguf", quant="f32")
    assert r.verified and r.file_diff <= 1e-4 and r.source == "merged adapter"
    assert any("de-quantised base" in n for n in r.notes)
    lora = export_gguf_lora(run, tmp_path / "q-lora.gguf")
    assert lora.verified and any("4-bit base" in n for n in lora.notes)
