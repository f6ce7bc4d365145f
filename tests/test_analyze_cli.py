"""`tunewise analyze` end to end on adapters made with plain PEFT on the micro Llama (and a run-dir layout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture()
def run_cli(tmp_path, monkeypatch, capsys):
    """`tunewise analyze ...` in-process through the real entry point (tunewise.cli.main): exit code, out, err."""
    from tunewise.cli import main

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))

    def run(*args) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["tunewise", "analyze", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture(scope="module")
def adapter_dir(micro_llama_dir, tmp_path_factory):
    """A LoRA adapter made with plain PEFT: B small random (as after some training), q/v/down of both layers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(micro_llama_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


def test_table_json_plots_and_cache(micro_llama_dir, adapter_dir, tmp_path, run_cli):
    r = run_cli(micro_llama_dir, adapter_dir, "--eps", "0.3,0.5,0.7", "--json", "--plots", tmp_path / "plots")
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    res = payload["results"][0]
    assert res["kind"] == "lora" and res["eps"] == [0.3, 0.5, 0.7]
    assert len(res["matrices"]) == 6 and res["summary"]["matrices"] == 6
    for e in ("0.3", "0.5", "0.7"):
        assert res["summary"]["total"][e] == sum(m["intruders"][e] for m in res["matrices"])
        assert sum(v[e] for v in res["summary"]["per_layer"].values()) == res["summary"]["total"][e]
        assert sum(v[e] for v in res["summary"]["per_module"].values()) == res["summary"]["total"][e]
    assert res["summary"]["total"]["0.3"] <= res["summary"]["total"]["0.5"] <= res["summary"]["total"]["0.7"]
    assert all(m["spectrum"]["rank"] == 4 and len(m["similarities"]) == 10 for m in res["matrices"])
    assert res["cache"] == {"dir": str(tmp_path / "cache" / "svd"), "hits": 0, "misses": 6}
    for p in payload["plots"]:
        assert p.endswith(".png") and open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # same counts from the cache, and a human table
    r2 = run_cli(micro_llama_dir, adapter_dir, "--eps", "0.3,0.5,0.7")
    assert r2.returncode == 0, r2.stderr
    assert "6 from cache, 0 computed" in r2.stdout
    assert f"{res['summary']['total']['0.5']} in {res['summary']['matrices_with_intruders']['0.5']} of 6" in r2.stdout


def test_run_dir_full_model_and_mitigation(micro_llama_dir, adapter_dir, tmp_path, run_cli):
    import shutil

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # a run directory as `tunewise train` writes it (config.yaml + adapter/), and a full fine-tuned model folder
    run = tmp_path / "run"
    shutil.copytree(adapter_dir, run / "adapter")
    (run / "config.yaml").write_text(f"base: {micro_llama_dir}\nmethod: lora\ndata: {{train: train.jsonl}}\n")
    full = AutoModelForCausalLM.from_pretrained(micro_llama_dir)
    with torch.no_grad():
        for p in full.parameters():
            if p.dim() == 2:
                p.add_(1e-4 * torch.randn_like(p))
    full.save_pretrained(tmp_path / "full")
    r = run_cli(micro_llama_dir, run, tmp_path / "full", "--json", "--mitigate", "0", "--out", tmp_path / "m")
    assert r.returncode == 2 and "exactly one TUNED" in r.stderr and "Traceback" not in r.stderr

    r = run_cli(micro_llama_dir, run, tmp_path / "full", "--json")
    assert r.returncode == 0, r.stderr
    lora_res, full_res = json.loads(r.stdout)["results"]
    assert lora_res["kind"] == "lora" and full_res["kind"] == "full"
    assert full_res["summary"]["matrices"] == 14 and full_res["summary"]["total"]["0.5"] == 0
    assert lora_res["cache"]["misses"] == 6 and full_res["cache"]["hits"] == 6  # one base decomposition each

    r = run_cli(micro_llama_dir, run, "--json", "--mitigate", "0", "--mitigate-all", "--out", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["mitigation"]
    assert m["lambda"] == 0.0 and m["which"] == "all"
    assert m["intruders_scaled"] == lora_res["summary"]["total"]["0.5"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(micro_llama_dir), str(tmp_path / "m"))
    assert model.peft_config["default"].r == 4
    r = run_cli(micro_llama_dir, tmp_path / "m", "--json")
    after = json.loads(r.stdout)["results"][0]["summary"]["total"]["0.5"]
    if lora_res["summary"]["total"]["0.5"]:
        assert after < lora_res["summary"]["total"]["0.5"]


@pytest.mark.parametrize("args, message", [
    (["--eps", "0.5,abc"], "comma-separated"),
    (["--eps", "1.5"], "(0, 1]"),
    (["--mitigate", "0.5"], "go together"),
    (["--k", "0"], "at least 1"),
])
def test_bad_options_are_one_line_errors(micro_llama_dir, adapter_dir, run_cli, args, message):
    r = run_cli(micro_llama_dir, adapter_dir, *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_missing_tuned_is_a_clear_error_from_the_installed_command(micro_llama_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "tunewise", "analyze", str(micro_llama_dir), str(tmp_path / "nope")],
                       capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
