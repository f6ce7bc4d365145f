"""`tunewise train` end to end on a micro Llama: the three methods, outputs other tools load, guards, resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunewise.config import validate_config
from tunewise.errors import TunewiseError
from tunewise.train import train
from tunewise.train.checkpoint import latest_checkpoint
from tunewise.train.guards import Guards


def make_data(tmp_path: Path, n: int = 32, seed: int = 0, repeat: bool = False) -> Path:
    from tunewise.zoo.corpus import arithmetic_fact

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q, a = arithmetic_fact(rng) if not repeat else ("1 + 1 =", " 2")
        rows.append({"prompt": f"Q: {q}", "completion": a})
    path = tmp_path / f"data-{seed}-{n}-{repeat}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_for(base, data, method="lora", **train_kw):
    guards = train_kw.pop("guards", {})
    extra = train_kw.pop("extra", {})
    t = {"epochs": 1, "batch_size": 8, "lr": 1e-3, "log_every": 1, **train_kw}
    return validate_config({"base": str(base), "method": method, "data": {"train": str(data), "max_seq_len": 32},
                            "lora": {"r": 4}, "train": t, "guards": guards, **extra})


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_three_methods_train_and_outputs_load_in_plain_tools(method, micro_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    data = make_data(tmp_path)
    res = train(cfg_for(micro_llama_dir, data, method, max_steps=4), tmp_path / "run", quiet=True)
    s = res.summary.as_dict()
    assert s["status"] == "completed" and s["steps"] == 4
    assert all(k in s for k in ("tokens_per_s", "peak_rss_mb", "trainable_params", "total_params", "guard_events"))
    losses = [m["loss"] for m in metrics(res.run_dir) if "loss" in m]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert (res.run_dir / "loss.png").stat().st_size > 1000
    if method == "full":
        model = AutoModelForCausalLM.from_pretrained(res.run_dir / "model")
        assert s["trainable_params"] == s["total_params"]
        base = AutoModelForCausalLM.from_pretrained(micro_llama_dir)
        assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)
    else:
        from peft import PeftModel

        adapter = res.run_dir / "adapter"
        assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"}
        base = AutoModelForCausalLM.from_pretrained(micro_llama_dir)
        model = PeftModel.from_pretrained(base, adapter)
        b = [v for k, v in load_file(adapter / "adapter_model.safetensors").items() if "lora_B" in k]
        assert b and any(v.abs().sum() > 0 for v in b)  # B moved from its zero init
        assert s["trainable_params"] < s["total_params"] / 4
        assert s["total_params"] >= base.num_parameters()  # 4-bit weights counted at their logical size
    ids = torch.tensor([[5, 6, 7]])
    assert torch.isfinite(model(input_ids=ids).logits).all()


def test_trainable_tokens_train_only_those_embedding_rows_and_load_in_plain_peft(micro_llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_llama_dir)
    ids = sorted(set(tok("=", add_special_tokens=False)["input_ids"]))
    data = make_data(tmp_path)
    cfg = cfg_for(micro_llama_dir, data, max_steps=3, extra={"lora": {"r": 4, "trainable_tokens": ["="]}})
    res = train(cfg, tmp_path / "run", quiet=True)
    plain = res.summary.trainable_params
    assert plain == train(cfg_for(micro_llama_dir, data, max_steps=1), tmp_path / "plain", quiet=True).summary.trainable_params + len(ids) * 32  # one 32-wide row per token

    base = AutoModelForCausalLM.from_pretrained(micro_llama_dir)
    before = base.get_input_embeddings().weight.detach().clone()
    merged = PeftModel.from_pretrained(base, res.run_dir / "adapter").merge_and_unload()
    after = merged.get_input_embeddings().weight.detach()
    changed = sorted((before != after).any(dim=1).nonzero().flatten().tolist())
    assert changed == ids  # the named rows moved, no other
    assert merged.get_output_embeddings().weight.data_ptr() == after.data_ptr()  # still tied


def test_trainable_token_ids_from_strings_or_targets(micro_llama_dir, tmp_path):
    from transformers import AutoTokenizer

    from tunewise.data.formats import IGNORE, Example
    from tunewise.errors import ConfigError
    from tunewise.train.methods import trainable_token_ids

    tok = AutoTokenizer.from_pretrained(micro_llama_dir)
    data = make_data(tmp_path)
    examples = [Example([5, 6, 7, 8], [IGNORE, IGNORE, 7, 8], 1), Example([5, 9], [IGNORE, 9], 2)]

    def as_cfg(tokens, **kw):
        return cfg_for(micro_llama_dir, data, extra={"lora": {"trainable_tokens": tokens}, **kw})

    assert trainable_token_ids(as_cfg("targets"), tok, examples) == [7, 8, 9]
    assert trainable_token_ids(as_cfg(["[", "]"]), tok, examples) == sorted(
        set(tok("[", add_special_tokens=False)["input_ids"] + tok("]", add_special_tokens=False)["input_ids"]))
    assert trainable_token_ids(as_cfg([]), tok, examples) == []
    assert trainable_token_ids(cfg_for(micro_llama_dir, data, "full", extra={"lora": {"trainable_tokens": "targets"}}),
                               tok, examples) == []
    with pytest.raises(ConfigError) as e:
        trainable_token_ids(as_cfg("targets", task_type="sequence-classification", num_labels=2), tok, examples)
    assert e.value.message == ("1 problem(s) in the config:\n  - lora.trainable_tokens: only for causal-lm runs (a "
                               "classifier predicts labels, not tokens); remove lora.trainable_tokens")
    with pytest.raises(TunewiseError, match="trainable_tokens"):
        as_cfg("all")


def test_lora_that_does_not_fit_the_model_is_one_problem_each(micro_llama_dir):
    from transformers import AutoModelForCausalLM

    from tunewise.errors import ConfigError
    from tunewise.train.methods import check_lora_fits

    model = AutoModelForCausalLM.from_pretrained(micro_llama_dir)
    with pytest.raises(ConfigError) as e:
        check_lora_fits(model, 8, ["q_proj", "qkv"])
    assert e.value.problems == ["lora.target_modules: the model has no module named 'qkv'; its linear layers are "
                                "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj (or use 'auto')"]
    with pytest.raises(ConfigError) as e:
        check_lora_fits(model, 100_000, "all-linear")
    assert e.value.message == ("1 problem(s) in the config:\n  - lora.r: 100000 is wider than any layer of the model "
                               "(widest 826); typical ranks are 8 to 64")  # the vocabulary


def test_unknown_config_key_suggests_the_closest(tmp_path):
    with pytest.raises(TunewiseError) as e:
        validate_config({"base": "tiny", "data": {"train": "x.jsonl", "max_seq_length": 3}, "lora": {"rank": 8}})
    text = str(e.value)
    assert "data.max_seq_length: unknown key; did you mean 'data.max_seq_len'?" in text
    assert "lora.rank: unknown key; did you mean 'lora.r'?" in text


def test_config_warnings_epochs_and_lora_lr(micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=8)
    # A model under 20M parameters: the LoRA lr limit is 3x its size default of 5e-3 (tunewise.defaults).
    res = train(cfg_for(micro_llama_dir, data, epochs=4, lr=2e-2), tmp_path / "run", quiet=True)
    guards = {e["guard"] for e in res.summary.guard_events}
    assert {"epochs", "lr"} <= guards
    res = train(cfg_for(micro_llama_dir, data, epochs=1, lr=5e-4), tmp_path / "ok", quiet=True)
    assert "lr" not in {e["guard"] for e in res.summary.guard_events}
    # max_steps that amount to more than 3 passes over the data warn too (8 examples, batch 2: 4 steps an epoch)
    res = train(cfg_for(micro_llama_dir, data, max_steps=14, batch_size=2, lr=1e-5), tmp_path / "steps", quiet=True)
    assert [e["message"][:15] for e in res.summary.guard_events if e["guard"] == "epochs"] == ["3.5 epochs > 3:"]


@pytest.mark.parametrize("action", ["warn", "stop", "reduce_lr"])
def test_overfit_guard_actions(action, micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=8, repeat=True)  # one example repeated: the loss collapses
    cfg = cfg_for(micro_llama_dir, data, "full", max_steps=60, lr=2e-2, scheduler="constant",
                  guards={"overfit_action": action, "smoothing": 3})
    res = train(cfg, tmp_path / "run", quiet=True)
    overfit = [e for e in res.summary.guard_events if e["guard"] == "overfit"]
    assert overfit, res.summary.final_train_loss
    if action == "warn":
        assert res.summary.status == "completed" and res.summary.overfit_marked and len(overfit) == 1
        # the words say what the study measured: a loose sign, to be checked against the eval loss
        assert "a loose one" in overfit[0]["message"] and "check the eval loss" in overfit[0]["message"]
    elif action == "stop":
        assert res.summary.status == "stopped_by_guard" and res.summary.steps < 60
        assert latest_checkpoint(res.run_dir / "checkpoints") is not None
    else:
        lrs = [m["lr"] for m in metrics(res.run_dir) if "lr" in m]
        step = overfit[0]["step"]
        assert "halved" in overfit[0]["message"]
        assert lrs[step] < 0.6 * lrs[step - 1]


def test_spike_and_grad_norm_guards_fire():
    cfg = validate_config({"data": {"train": "x"}, "guards": {"grad_norm_limit": 10}})
    g = Guards(cfg)
    for i in range(6):
        assert g.observe(i, 1.0, 1.0) == []
    events = g.observe(6, 5.0, 50.0)
    assert {e.guard for e in events} == {"spike", "grad_norm"}
    assert "lower the learning rate" in events[0].message


def test_grad_norm_guard_in_a_real_run(micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=8)
    res = train(cfg_for(micro_llama_dir, data, max_steps=2, guards={"grad_norm_limit": 1e-6}), tmp_path / "r",
                quiet=True)
    assert any(e["guard"] == "grad_norm" for e in res.summary.guard_events)


def test_nan_loss_halts_without_writing_nonfinite_weights(micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=16)
    cfg = cfg_for(micro_llama_dir, data, "full", max_steps=10, lr=1e12, max_grad_norm=None, save_every=1)
    with pytest.raises(TunewiseError) as e:
        train(cfg, tmp_path / "run", quiet=True)
    assert e.value.exit_code == 3
    assert not (tmp_path / "run" / "model").exists()
    for ckpt in (tmp_path / "run" / "checkpoints").glob("step-*"):
        assert all(torch.isfinite(t).all() for t in load_file(ckpt / "trainable.safetensors").values())


def test_nan_exit_code_from_cli(micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=16)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"base: {micro_llama_dir}\nmethod: full\ndata: {{train: {data}, max_seq_len: 32}}\n"
                   "train: {max_steps: 10, lr: 1.0e+12, max_grad_norm: null, batch_size: 8}\n")
    r = subprocess.run([sys.executable, "-m", "tunewise", "train", str(cfg), "--out", str(tmp_path / "r"), "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert "nothing non-finite was written" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("method", ["lora", "full"])
def test_resume_is_exact(method, micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=40)
    cfg = cfg_for(micro_llama_dir, data, method, epochs=2, batch_size=6, grad_accum=2,
                  extra={"lora": {"r": 4, "dropout": 0.1}})  # dropout: the RNG state must resume too
    full = train(cfg, tmp_path / "a", quiet=True)
    part = train(cfg, tmp_path / "b", quiet=True, stop_at_step=3)
    assert part.summary.status == "stopped_at_step"
    resumed = train(cfg, tmp_path / "b", resume=True, quiet=True)
    a = [m["loss"] for m in metrics(full.run_dir) if "loss" in m]
    b = [m["loss"] for m in metrics(resumed.run_dir) if "loss" in m]
    assert len(a) == len(b) == full.summary.steps
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-6
    name = "adapter/adapter_model.safetensors" if method == "lora" else "model/model.safetensors"
    wa, wb = load_file(full.run_dir / name), load_file(resumed.run_dir / name)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0) for k in wa)


KILL_DURING_SAVE = r"""
import os, signal, sys
import safetensors.torch as st
from tunewise.config import load_run_config
from tunewise.train import checkpoint, train
real = st.save_file
calls = {"n": 0}
def dying_save(tensors, path, *a, **k):
    calls["n"] += 1
    if calls["n"] == 3:  # the third checkpoint: write half a file, then die hard
        with open(path, "wb") as f:
            f.write(b"\x00" * 100)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(tensors, path, *a, **k)
checkpoint.save_file = dying_save
train(load_run_config(sys.argv[1]), sys.argv[2], quiet=True)
"""


def test_sigkill_while_saving_leaves_no_half_checkpoint(micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=48)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"base: {micro_llama_dir}\ndata: {{train: {data}, max_seq_len: 32}}\n"
                   "lora: {r: 4}\ntrain: {max_steps: 6, batch_size: 8, lr: 1.0e-3, save_every: 1}\n")
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(cfg), str(run)], capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt is not None and ckpt.name == "step-0000002"  # the half-written step 3 is invisible
    assert load_file(ckpt / "trainable.safetensors")
    res = train(validate_config(__import__("yaml").safe_load(cfg.read_text())), run, resume=True, quiet=True)
    assert res.summary.status == "completed" and res.summary.steps == 6


def test_sigterm_finishes_the_step_and_checkpoints(micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=64)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"base: {micro_llama_dir}\ndata: {{train: {data}, max_seq_len: 32}}\n"
                   "lora: {r: 4}\ntrain: {max_steps: 100000, batch_size: 8, lr: 1.0e-4}\n")
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tunewise", "train", str(cfg), "--out", str(run), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err  # interrupted (checkpoint saved) is not "done"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert latest_checkpoint(run / "checkpoints") is not None
    assert f"tunewise train --resume {run}" in out


def test_refuses_to_overwrite_a_run(micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=8)
    train(cfg_for(micro_llama_dir, data, max_steps=1), tmp_path / "r", quiet=True)
    with pytest.raises(TunewiseError, match="already holds a run"):
        train(cfg_for(micro_llama_dir, data, max_steps=1), tmp_path / "r", quiet=True)


def test_ddp_two_processes_match_single_process(micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=48)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"base: {micro_llama_dir}\nmethod: full\ndata: {{train: {data}, max_seq_len: 32}}\n"
                   "train: {max_steps: 4, batch_size: 8, lr: 1.0e-3}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    from conftest import run_torchrun

    r = run_torchrun([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                      "-m", "tunewise", "train", cfg, "--out", tmp_path / "ddp", "-q"], out=tmp_path / "ddp", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    single = train(validate_config(__import__("yaml").safe_load(cfg.read_text())), tmp_path / "one", quiet=True)
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["world_size"] == 2 and ddp["ddp_ranks_identical"] is True
    a = [m["loss"] for m in metrics(tmp_path / "ddp") if "loss" in m]
    b = [m["loss"] for m in metrics(single.run_dir) if "loss" in m]
    assert len(a) == len(b) == 4
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4  # documented tolerance: fp32 summation order differs


def test_learning_rate_defaults_follow_the_model_size(micro_llama_dir, tmp_path):
    from tunewise.defaults import default_lr, lora_lr_limit

    assert default_lr("lora", 5_000_000)[0] == 5e-3 and default_lr("full", 5_000_000)[0] == 1e-3
    assert default_lr("lora", 134_515_008)[0] == 1e-3 and default_lr("full", 134_515_008)[0] == 1e-4
    assert default_lr("lora", 6_738_415_616)[0] == 3e-5 and default_lr("full", 6_738_415_616)[0] == 1e-5
    assert lora_lr_limit(6_738_415_616) == 1e-4 and lora_lr_limit(134_515_008) == 3e-3
    res = train(cfg_for(micro_llama_dir, make_data(tmp_path, n=8), max_steps=1, lr=None), tmp_path / "run", quiet=True)
    assert res.summary.lr == 5e-3  # no lr given: the size default, recorded in the summary


@pytest.mark.parametrize("wrap", ["plain", "peft"])
def test_loss_on_target_positions_only_equals_the_full_logits_loss(wrap, micro_llama_dir):
    """Projecting only the target positions (logits_to_keep) gives the same loss and gradients as all logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunewise.data.formats import IGNORE
    from tunewise.train.loop import _plain_output_projection, _projects_selected_positions, summed_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(micro_llama_dir)
    if wrap == "peft":
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    ids = torch.randint(2, 100, (3, 12))
    labels = ids.clone()
    labels[0, :5] = IGNORE  # prompts of different lengths, and padding at the end of row 2
    labels[1, :8] = IGNORE
    labels[2, :3] = IGNORE
    labels[2, 10:] = IGNORE
    mask = torch.ones_like(ids)
    mask[2, 10:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def loss_and_grads(selected: bool, fused: bool = True):
        model.zero_grad()
        model._tunewise_keeps_logits = selected
        if not fused:
            model._tunewise_plain_head = (None,)  # as for an adapter on the head: logits, then the loss
        loss = summed_loss(model, batch, classification=False)
        loss.backward()
        del model._tunewise_plain_head
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    assert _plain_output_projection(model) is not None  # the chunked projection + loss path is taken
    loss_all, grads_all = loss_and_grads(False)
    for fused in (True, False):
        loss_sel, grads_sel = loss_and_grads(True, fused)
        assert torch.allclose(loss_sel, loss_all, atol=1e-5, rtol=1e-6)
        assert grads_sel.keys() == grads_all.keys() and grads_sel
        for name in grads_all:
            assert torch.allclose(grads_sel[name], grads_all[name], atol=1e-6), name
    del model._tunewise_keeps_logits
    assert _projects_selected_positions(model)  # a transformers 5 Llama, under PEFT or not, takes the mask


def test_right_padded_causal_batch_trains_without_its_mask_and_keeps_less():
    """A right-padded causal LM batch goes in without its attention mask (causal attention already hides the padding
    after each real token): same loss and gradients, and SDPA keeps grouped key/value heads unrepeated."""
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunewise.data.formats import IGNORE
    from tunewise.train.loop import summed_loss
    from tunewise.train.packing import forward_inputs

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    model.config._attn_implementation = "sdpa"
    ids = torch.randint(1, 64, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 10:] = 0
    labels = ids.masked_fill(mask == 0, IGNORE)
    labels[:, :3] = IGNORE
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}

    assert "attention_mask" not in forward_inputs(model, batch, causal_lm=True)
    left = {**batch, "attention_mask": mask.flip(1)}  # padding first: the mask is needed
    assert torch.equal(forward_inputs(model, left, causal_lm=True)["attention_mask"], left["attention_mask"])
    assert "attention_mask" in forward_inputs(model, batch, causal_lm=False)  # e.g. a classifier

    def run(masked: bool):
        model.zero_grad()
        kept = []
        hooks = (lambda t: kept.append(t.numel()) or t, lambda t: t)
        with torch.autograd.graph.saved_tensors_hooks(*hooks):
            if masked:  # the model's own forward with the mask, as before
                out = model(input_ids=ids, attention_mask=mask, logits_to_keep=F.pad(labels[:, 1:] != IGNORE, (0, 1)))
                loss = F.cross_entropy(out.logits.reshape(-1, 64), labels[:, 1:][labels[:, 1:] != IGNORE],
                                       reduction="sum")
            else:
                loss = summed_loss(model, batch, classification=False)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, sum(kept)

    loss_masked, grads_masked, kept_masked = run(True)
    loss_plain, grads_plain, kept_plain = run(False)
    assert torch.allclose(loss_plain, loss_masked, atol=1e-5, rtol=1e-6)
    for name, g in grads_masked.items():
        assert torch.allclose(grads_plain[name], g, atol=1e-6), name
    # per layer: key and value at 1 head instead of 4 (3 x 8 dims x 36 tokens x 2 saved less), less the mask
    assert kept_masked - kept_plain >= 2 * 2 * 3 * 8 * 36
