"""--step N on merge, export and serve: the adapter of a run's checkpoint N (as eval and chat take it), through the
real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_targets import _trained  # a real 4-step run that keeps checkpoints 2 and 4

from tunewise.errors import TunewiseError


def cli(*args) -> str:
    from typer.testing import CliRunner

    from tunewise.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def refused(*args) -> str:
    """The command as a user runs it: a refusal is exit 2 and one line on stderr."""
    proc = subprocess.run([sys.executable, "-m", "tunewise", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    return proc.stderr


def as_json(output: str) -> dict:
    return json.loads(output[output.index("{"):])


def test_merge_and_export_take_a_checkpoint(tmp_path, micro_llama_dir):
    from safetensors.torch import load_file

    run = _trained(tmp_path, micro_llama_dir)
    merged = {}
    for step in ("2", "4", None):
        name = f"merged-{step or 'final'}"
        r = as_json(cli("merge", run, "--out", tmp_path / name, "--json", *(["--step", step] if step else [])))
        assert r["verified"] and (r["adapter"].endswith(f"step-000000{step}") if step else "step" not in r["adapter"])
        assert Path(r["adapter"]).exists()  # the checkpoint's folder, not a temporary copy of it
        merged[step] = load_file(str(tmp_path / name / "model.safetensors"))
    assert all(torch.equal(merged["4"][k], merged[None][k]) for k in merged[None])  # step 4 is the final adapter
    assert not all(torch.equal(merged["2"][k], merged[None][k]) for k in merged[None])

    files = {}
    for step in ("2", "4", None):
        out = tmp_path / f"lora-{step or 'final'}.gguf"
        r = as_json(cli("export", run, "--format", "gguf-lora", "--out", out, "--json",
                        *(["--step", step] if step else [])))
        assert r["verified"] and r["target"].endswith(f"step-000000{step}" if step else run.name)
        files[step] = out.read_bytes()
    assert files["4"] == files[None] and files["2"] != files[None]
    r = as_json(cli("export", run, "--step", "2", "--out", tmp_path / "model-2.gguf", "--json"))
    assert r["verified"] and r["source"] == "merged adapter"

    assert "no complete checkpoint of step 3 (kept: 2, 4)" in refused("merge", run, "--step", "3", "--out",
                                                                       tmp_path / "nope")
    assert "kept: 2, 4" in refused("export", run, "--step", "3", "--out", tmp_path / "nope.gguf")


def test_serve_step_picks_the_checkpoint_of_its_one_adapter(tmp_path, micro_llama_dir):
    from tunewise.commands.serve import parse_adapter_specs
    from tunewise.serve.app import adapter_folder
    from tunewise.targets import checkpoint_of, resolve_target

    run = _trained(tmp_path, micro_llama_dir)
    specs = parse_adapter_specs([f"mid={run}"], step=2)
    assert specs == {"mid": checkpoint_of(run, 2)}
    assert adapter_folder(specs["mid"]) == resolve_target(run, step=2).path  # what the registry serves
    with pytest.raises(TunewiseError, match="needs exactly one --adapter"):
        parse_adapter_specs([f"a={run}", f"b={run}"], step=2)
    assert "kept: 2, 4" in refused("serve", "--base", micro_llama_dir, "--adapter", f"a={run}", "--step", "3",
                                   "--port", "1")
