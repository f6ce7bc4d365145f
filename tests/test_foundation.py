"""The package, the CLI, the device policy, base resolution and bad-input messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tunewise.device import policy
from tunewise.errors import TunewiseError
from tunewise.models import load_base, resolve_base
from tunewise.targets import resolve_tuned


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tunewise", *args], capture_output=True, text=True, **kw)


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("doctor", "train", "advise", "estimate"):
        assert cmd in r.stdout


def test_doctor_json():
    r = run_cli("doctor", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["policy"]["dtype"] == ("fp32" if not torch.cuda.is_available() else info["policy"]["dtype"])
    assert info["cpu_cores"] == os.cpu_count()


def test_cpu_policy_is_fp32_and_override_works():
    assert policy("cpu").dtype == torch.float32
    assert policy("cpu", "bf16").dtype == torch.bfloat16
    with pytest.raises(TunewiseError, match="unknown dtype"):
        policy("cpu", "fp8")


def test_missing_path_is_one_clear_line(tmp_path):
    with pytest.raises(TunewiseError, match="does not exist"):
        resolve_base(str(tmp_path / "nope"))
    with pytest.raises(TunewiseError, match="no config.json"):
        resolve_base(str(tmp_path))


def test_hub_id_offline_is_one_clear_line():
    with pytest.raises(TunewiseError, match="not in the local Hugging Face cache"):
        load_base("some-org/not-a-cached-model-xyz")


def test_tokenizer_mismatch_is_refused(tmp_path, micro_llama_dir):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(micro_llama_dir).save_pretrained(tmp_path)
    with pytest.raises(TunewiseError, match="tokenizer .* has .* tokens but the model embeds only 64"):
        load_base(str(tmp_path))


def test_cli_error_is_not_a_traceback(tmp_path):
    r = run_cli("doctor", "--bogus")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr


def test_resolve_tuned_rejects_random_folder(tmp_path):
    with pytest.raises(TunewiseError, match="neither a run directory"):
        resolve_tuned(tmp_path)


def test_base_fingerprint_sees_a_base_replaced_in_place(tmp_path):
    """Caches of runs and scores are keyed on it: same files, same fingerprint; any rewritten block, another."""
    from tunewise.models import FINGERPRINT_BLOCK, base_fingerprint

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    weights = bytearray(range(256)) * (40 * FINGERPRINT_BLOCK // 256)  # 40 blocks: more than are sampled
    (tmp_path / "model.safetensors").write_bytes(weights)
    first = base_fingerprint(tmp_path)
    assert base_fingerprint(str(tmp_path)) == first and len(first) == 16
    weights[len(weights) // 2] ^= 1  # one bit in the middle, where a sampled block lies
    (tmp_path / "model.safetensors").write_bytes(weights)
    assert base_fingerprint(tmp_path) != first
    assert base_fingerprint("org/some-model") != base_fingerprint("org/other-model")  # a hub id: by name


def test_a_bug_has_its_own_exit_code_and_keeps_its_traceback(monkeypatch, capsys):
    """Exit 1 means "finished, failed as you asked"; a bug in tunewise must not look like that (nor like bad input)."""
    from tunewise import cli

    def broken(args=None, prog_name=None):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "command", lambda: broken)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["doctor"])
    err = capsys.readouterr().err
    assert exit_.value.code == cli.EXIT_INTERNAL == 70
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err and "internal error" in err


def test_the_cli_asks_torch_for_huge_page_aligned_buffers_unless_the_user_said_otherwise():
    # PyTorch reads THP_MEM_ALLOC_ENABLE once, before any tensor exists: a fresh process shows whether it took
    code = ("import os, sys\nfrom tunewise.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('THP=' + os.environ['THP_MEM_ALLOC_ENABLE'])\n")
    for given, expected in ((None, "1"), ("0", "0")):
        env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
        if given is not None:
            env["THP_MEM_ALLOC_ENABLE"] = given
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert f"THP={expected}" in r.stderr, r.stderr[-2000:]
