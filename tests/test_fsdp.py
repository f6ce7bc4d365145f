"""`train.distributed: fsdp` with 2 processes on CPU (torchrun, gloo): the same weights as one process, exact
sharded resume, and a final output that plain transformers / PEFT load."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import yaml
from conftest import run_torchrun
from safetensors.torch import load_file
from test_train import make_data, metrics

from tunewise.config import validate_config
from tunewise.train import train
from tunewise.train.checkpoint import complete_checkpoints, damaged_file

# What each torchrun process runs: train, optionally stopping at a step or resuming.
LAUNCH = r"""
import sys
from tunewise.config import load_run_config
from tunewise.train import train
cfg, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "resume":
    train(load_run_config(f"{out}/config.yaml"), out, resume=True, quiet=True)
else:
    train(load_run_config(cfg), out, quiet=True, stop_at_step=int(mode) if mode != "all" else None)
"""


def torchrun(tmp_path: Path, cfg: Path, out: Path, mode: str = "all", nproc: int = 2) -> None:
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = run_torchrun([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                      script, cfg, out, mode], out=out, env=env)
    assert r.returncode == 0, r.stderr[-4000:]


def write_cfg(tmp_path: Path, name: str, body: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_fsdp_full_matches_one_process_and_saves_a_plain_model(micro_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    data = make_data(tmp_path, n=41)  # 6 batches an epoch, one of them a single row: rank 1 gets none of it
    body = {"base": str(micro_llama_dir), "method": "full", "data": {"train": str(data), "max_seq_len": 32},
            # global batch 8 = 2 ranks x 4 rows, 2 micro-batches per step: FSDP reduce-scatters each one
            "train": {"max_steps": 4, "batch_size": 8, "grad_accum": 2, "lr": 1e-3, "save_every": 2,
                      "distributed": "fsdp"}}
    torchrun(tmp_path, write_cfg(tmp_path, "fsdp", body), tmp_path / "fsdp")
    one = train(validate_config(body), tmp_path / "one", quiet=True)  # world size 1: plain single process
    s = json.loads((tmp_path / "fsdp" / "summary.json").read_text())
    assert s["world_size"] == 2 and s["distributed"] == "fsdp" and s["status"] == "completed"
    assert len(s["peak_rss_mb_per_rank"]) == 2
    a = [m["loss"] for m in metrics(tmp_path / "fsdp") if "loss" in m]
    b = [m["loss"] for m in metrics(one.run_dir) if "loss" in m]
    assert len(a) == len(b) == 4 and max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    # each rank wrote its own shard of the checkpoint, and rank 0 recorded every file's sha256
    ckpt = complete_checkpoints(tmp_path / "fsdp" / "checkpoints")[-1]
    assert {p.name for p in ckpt.glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
    assert damaged_file(ckpt) is None
    # the gathered output is an ordinary transformers folder with the single-process weights
    sharded = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "model").state_dict()
    single = AutoModelForCausalLM.from_pretrained(one.run_dir / "model").state_dict()
    assert sharded.keys() == single.keys()
    assert all(torch.allclose(sharded[k], single[k], atol=1e-4, rtol=0) for k in single)
    base = AutoModelForCausalLM.from_pretrained(micro_llama_dir).state_dict()
    assert not torch.equal(sharded["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])


def test_fsdp_lora_through_the_fused_path_matches_one_process(micro_llama_dir, tmp_path):
    """Dropout 0: the fused LoRA layers and MLP, and norm outputs rebuilt in backward from FSDP's re-gathered
    shards, give one process's losses."""
    data = make_data(tmp_path, n=32)
    body = {"base": str(micro_llama_dir), "method": "lora", "data": {"train": str(data), "max_seq_len": 32},
            "lora": {"r": 4, "dropout": 0.0},
            "train": {"max_steps": 3, "batch_size": 8, "lr": 1e-2, "distributed": "fsdp"}}
    torchrun(tmp_path, write_cfg(tmp_path, "fused", body), tmp_path / "fsdp")
    one = train(validate_config(body), tmp_path / "one", quiet=True)
    a = [m["loss"] for m in metrics(tmp_path / "fsdp") if "loss" in m]
    b = [m["loss"] for m in metrics(one.run_dir) if "loss" in m]
    assert len(a) == len(b) == 3 and max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)
    assert a[2] != a[0]  # the adapter did train


def test_fsdp_lora_sharded_resume_is_exact_and_saves_a_plain_adapter(micro_llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data, held = make_data(tmp_path, n=40), make_data(tmp_path, n=8, seed=1)
    body = {"base": str(micro_llama_dir), "method": "lora",
            "data": {"train": str(data), "eval": str(held), "max_seq_len": 32},
            "lora": {"r": 4, "dropout": 0.1},  # dropout: each rank's RNG state must resume too
            # activation checkpointing under FSDP (recomputed layers must gather their shards again)
            "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "save_every": 2, "distributed": "fsdp",
                      "gradient_checkpointing": True}}
    cfg = write_cfg(tmp_path, "lora", body)
    torchrun(tmp_path, cfg, tmp_path / "whole")
    torchrun(tmp_path, cfg, tmp_path / "part", mode="3")
    assert json.loads((tmp_path / "part" / "summary.json").read_text())["status"] == "stopped_at_step"
    torchrun(tmp_path, cfg, tmp_path / "part", mode="resume")
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    part = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert whole["status"] == part["status"] == "completed" and whole["steps"] == part["steps"] == 10
    a = [m["loss"] for m in metrics(tmp_path / "whole") if "loss" in m]
    b = [m["loss"] for m in metrics(tmp_path / "part") if "loss" in m]
    assert len(a) == len(b) == 10 and max(abs(x - y) for x, y in zip(a, b)) < 1e-6
    assert len(whole["eval_losses"]) == 2 and abs(whole["eval_losses"][-1][1] - part["eval_losses"][-1][1]) < 1e-6
    wa = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "part" / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0) for k in wa)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in wa.items())
    # the gathered adapter loads onto the plain base
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(micro_llama_dir), tmp_path / "whole" /
                                      "adapter")
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(wa)


def test_estimate_per_process_figure_matches_the_fsdp_peak_rss(tiny_base_dir, tmp_path):
    """`estimate --gpus 2 --distributed fsdp --device cpu` against each process's measured peak RSS (within 20%)."""
    from tunewise.estimate import EstimateRequest, run_estimate
    from tunewise.estimate.memory import MB

    seq, batch = 64, 8
    words = "the quick brown fox jumps over the lazy dog while seven restaurants serve 12 pizzas".split()
    data = tmp_path / "long.jsonl"  # every example truncated to exactly `seq` tokens: the estimate's batch shape
    data.write_text("".join(json.dumps({"prompt": f"Example {i}:\n", "completion": " " + " ".join(
        words[(i + j) % len(words)] for j in range(200))}) + "\n" for i in range(32)))
    body = {"base": str(tiny_base_dir), "method": "full",
            "data": {"train": str(data), "max_seq_len": seq, "overlong": "truncate", "check": False},
            "train": {"max_steps": 4, "batch_size": batch, "lr": 1e-3, "distributed": "fsdp"}}
    torchrun(tmp_path, write_cfg(tmp_path, "rss", body), tmp_path / "rss")
    measured = json.loads((tmp_path / "rss" / "summary.json").read_text())["peak_rss_mb_per_rank"]
    req = EstimateRequest(model=str(tiny_base_dir), methods=("full",), batch=batch // 2, seq=seq, device="cpu",
                          gpus=2, distributed="fsdp")
    b = run_estimate(req).breakdowns["full"]
    assert "FSDP gathered weights (root + 2 layers)" in b.terms
    estimate = b.total / MB
    assert len(measured) == 2 and all(abs(estimate / m - 1) < 0.2 for m in measured), (estimate, measured)


# rank 1's disk fills up while it writes its part of the second checkpoint
FULL_DISK_RANK1 = r"""
import errno, os, sys
from tunewise.train import fsdp
real, calls = fsdp.save_rng, {"n": 0}
def filling(path):
    calls["n"] += 1
    if os.environ["RANK"] == "1" and calls["n"] == 2:
        path.write_bytes(b"\x00" * 10)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    real(path)
fsdp.save_rng = filling
from tunewise.cli import main
main(["train", sys.argv[1], "--out", sys.argv[2], "-q"])
"""


def test_fsdp_full_disk_on_one_rank_stops_every_rank_and_keeps_the_previous_checkpoint(micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=48)
    body = {"base": str(micro_llama_dir), "method": "lora", "data": {"train": str(data), "max_seq_len": 32},
            "lora": {"r": 4}, "train": {"max_steps": 6, "batch_size": 8, "lr": 1e-3, "save_every": 1,
                                         "distributed": "fsdp"}}
    cfg, run = write_cfg(tmp_path, "disk", body), tmp_path / "run"
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK_RANK1)
    r = run_torchrun([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                      script, cfg, run], out=run, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0
    assert "the disk is full" in r.stderr and "step-0000001 is intact" in r.stderr, r.stderr[-3000:]
    assert "exitcode  : 4" in r.stderr  # stopped with the checkpoint-write exit code (the other rank did not hang)
    ckpts = complete_checkpoints(run / "checkpoints")
    assert [c.name for c in ckpts] == ["step-0000001"] and damaged_file(ckpts[0]) is None
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not (run / "summary.json").exists()
