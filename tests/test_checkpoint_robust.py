"""Checkpoints that survive the disk: sha256-verified resume, a full disk mid-save, keep_last."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file
from test_train import cfg_for, make_data, metrics

from tunewise.train import train
from tunewise.train.checkpoint import SUMS, complete_checkpoints, damaged_file, latest_checkpoint


def test_corrupted_latest_checkpoint_is_skipped_for_the_previous_one(micro_llama_dir, tmp_path, capsys):
    data = make_data(tmp_path, n=48)
    cfg = cfg_for(micro_llama_dir, data, "lora", max_steps=5, save_every=1, keep_last=2)
    whole = train(cfg, tmp_path / "a", quiet=True)
    part = train(cfg, tmp_path / "b", quiet=True, stop_at_step=3)
    assert part.summary.status == "stopped_at_step"
    ckpts = complete_checkpoints(tmp_path / "b" / "checkpoints")
    assert [c.name for c in ckpts] == ["step-0000002", "step-0000003"]
    assert all(damaged_file(c) is None for c in ckpts)
    assert set(json.loads((ckpts[-1] / SUMS).read_text())) == {"trainable.safetensors", "optimizer.pt", "state.json"}
    # one flipped byte in the middle of the latest checkpoint's weights: still a well-formed file, wrong numbers
    bad = ckpts[-1] / "trainable.safetensors"
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    assert damaged_file(ckpts[-1]) == "trainable.safetensors"
    capsys.readouterr()
    resumed = train(cfg, tmp_path / "b", resume=True, quiet=True)
    err = capsys.readouterr().err
    assert "step-0000003" in err and "trainable.safetensors" in err and "skipping" in err
    assert resumed.summary.status == "completed" and resumed.summary.steps == 5
    # it continued from step 2, so the run is the uninterrupted one again
    a = [m["loss"] for m in metrics(whole.run_dir) if "loss" in m]
    b = [m["loss"] for m in metrics(resumed.run_dir) if "loss" in m]
    assert len(a) == len(b) == 5 and max(abs(x - y) for x, y in zip(a, b)) < 1e-6
    wa = load_file(whole.run_dir / "adapter" / "adapter_model.safetensors")
    wb = load_file(resumed.run_dir / "adapter" / "adapter_model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0) for k in wa)


def test_keep_last_bounds_the_checkpoints_on_disk(micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=48)
    run = train(cfg_for(micro_llama_dir, data, "lora", max_steps=5, save_every=1, keep_last=3), tmp_path / "r",
                quiet=True).run_dir
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000003", "step-0000004",
                                                                        "step-0000005"]


FULL_DISK = r"""
import errno, sys
from tunewise.train import checkpoint
real = checkpoint.save_file
calls = {"n": 0}
def filling_save(tensors, path, *a, **k):
    calls["n"] += 1
    if calls["n"] == 3:  # the third checkpoint: part of the file reaches the disk, then the disk is full
        with open(path, "wb") as f:
            f.write(b"\x00" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", path)
    return real(tensors, path, *a, **k)
checkpoint.save_file = filling_save
from tunewise.cli import main
main(["train", sys.argv[1], "--out", sys.argv[2], "-q"])
"""


def test_full_disk_while_saving_stops_the_run_and_keeps_the_previous_checkpoint(micro_llama_dir, tmp_path):
    data = make_data(tmp_path, n=48)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"base: {micro_llama_dir}\ndata: {{train: {data}, max_seq_len: 32}}\n"
                   "lora: {r: 4}\ntrain: {max_steps: 6, batch_size: 8, lr: 1.0e-3, save_every: 1}\n")
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", FULL_DISK, str(cfg), str(run)], capture_output=True, text=True)
    assert r.returncode == 4, r.stderr
    assert "the disk is full" in r.stderr and "step-0000002 is intact" in r.stderr, r.stderr
    assert f"tunewise train --resume {run}" in r.stderr and "Traceback" not in r.stderr
    ckpts = complete_checkpoints(run / "checkpoints")
    assert [c.name for c in ckpts] == ["step-0000001", "step-0000002"]
    assert all(damaged_file(c) is None for c in ckpts)
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == []  # no temp left
    assert not (run / "summary.json").exists()  # the run did not pretend to finish
    from tunewise.config import load_run_config

    res = train(load_run_config(cfg), run, resume=True, quiet=True)
    assert res.summary.status == "completed" and res.summary.steps == 6
    assert latest_checkpoint(run / "checkpoints") is not None


def test_a_checkpoint_resumes_only_in_the_layout_that_wrote_it(tmp_path):
    import pytest

    from tunewise.errors import TunewiseError
    from tunewise.train.fsdp import check_layout

    sharded = tmp_path / "step-0000002"
    sharded.mkdir()
    for name in (".metadata", "__0_0.distcp", "__1_0.distcp", "rng-0.pt", "rng-1.pt"):
        (sharded / name).write_bytes(b"x")
    check_layout(sharded, sharded=True, world=2)
    with pytest.raises(TunewiseError, match="sharded .fsdp. checkpoint"):
        check_layout(sharded, sharded=False, world=1)
    with pytest.raises(TunewiseError, match="written by 2 processes; this run has 4"):
        check_layout(sharded, sharded=True, world=4)
    plain = tmp_path / "step-0000003"
    plain.mkdir()
    (plain / "trainable.safetensors").write_bytes(b"x")
    check_layout(plain, sharded=False, world=1)
    with pytest.raises(TunewiseError, match="not sharded"):
        check_layout(plain, sharded=True, world=2)
