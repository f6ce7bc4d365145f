"""benchmarks/gpu_check.py --dry-run: the GPU check's own code on CPU at toy sizes, so it is known to run before a
task that is lent a GPU begins (the device run itself: benchmarks/RESULTS.md, "gpu_check")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def test_the_dry_run_trains_estimates_generates_and_resumes(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rep["device"] == "cpu" and rep["peak_tflops"] > 0
    rows = {(r["model"], r["method"]): r for r in rep["train"]}
    assert set(rows) == {(m, k) for m in ("tiny", "llama-toy") for k in ("lora", "qlora", "full")}
    for key, r in rows.items():
        assert r["status"] == "completed" and r["steps"] == rep["sizes"]["steps"], key
        assert r["last_loss"] < r["first_loss"], key  # the steps trained
        # MFU only > 0: a CPU shared with other work measures its own peak too noisily for an upper bound
        assert r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["estimate_tensors_mb"] > 0, key
        assert r["peak_mb"] is None and r["ratio"] is None  # no CUDA allocator on the CPU
    # LoRA and QLoRA train the same adapter; full fine-tuning trains every weight (tied embeddings counted once)
    for model in ("tiny", "llama-toy"):
        lora, qlora, full = (rows[(model, k)] for k in ("lora", "qlora", "full"))
        assert lora["trainable"] == qlora["trainable"] < full["trainable"] == full["params"]
        assert lora["estimate_tensors_mb"] < full["estimate_tensors_mb"]
    # 4-bit weights save memory on a base with real-sized layers (on the toy Llama the dequantised working copy of
    # one layer outweighs the saving)
    assert rows[("tiny", "qlora")]["estimate_tensors_mb"] < rows[("tiny", "lora")]["estimate_tensors_mb"]
    assert set(rep["qlora_trade"]) == {"tiny", "llama-toy"}
    for model, g in rep["generation"].items():
        for label in ("4 adapters", "bare base"):
            assert g[label]["requests"] == 4 and 0 < g[label]["tokens"] <= 4 * 4, (model, label)
        assert g["ratio"] > 0
    r = rep["resume"]
    assert r["statuses"] == ["completed", "completed"] and len(r["losses_resumed"]) == r["steps"]
    assert r["exact"] and r["max_loss_diff"] == 0 and r["max_weight_diff"] == 0  # CPU kernels are deterministic
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("| completed |") == 6 and "QLoRA vs LoRA on tiny" in table and "exact=True" in table
