"""RunDir (a run directory's layout, typed config) and resolve_target (what a model argument is)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from tunewise.errors import ConfigError, TunewiseError
from tunewise.rundir import RunDir
from tunewise.targets import EXPECTED, resolve_target, resolve_tuned


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, micro_llama_dir):
    """A real PEFT LoRA adapter on the micro Llama, saved as safetensors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapter")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(micro_llama_dir),
                           LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    return out


def _run(tmp_path, adapter_dir, base, **cfg):
    run = tmp_path / "run"
    shutil.copytree(adapter_dir, run / "adapter")
    config = {"base": str(base), "method": "lora", "data": {"train": "train.jsonl"}} | cfg
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


# ---------------------------------------------------------------------------------------------- RunDir


def test_run_dir_reads_its_typed_config_summary_and_metrics(tmp_path, adapter_dir, micro_llama_dir):
    run = RunDir(_run(tmp_path, adapter_dir, micro_llama_dir, method="qlora"))
    assert run.config().method == "qlora" and run.config().lora.r == 16  # typed, defaults filled in
    assert run.output == run.path / "adapter" and run.output_size_mb() > 0
    assert run.summary() is None and run.status is None and not run.completed and run.metrics() == []
    assert not run.resumable
    (run.path / "summary.json").write_text(json.dumps({"status": "completed", "steps": 3}))
    (run.path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    assert run.completed and run.summary()["steps"] == 3
    assert [r["loss"] for r in run.metrics()] == [2.0, 1.5]
    (run.path / "checkpoints").mkdir()
    assert run.resumable


def test_run_dir_bad_config_is_an_error_naming_the_file_and_field(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("base: tiny\nmethod: lora\nlora: {rank: 8}\n")  # no data, a misspelt key
    with pytest.raises(ConfigError) as e:
        RunDir(run).config()
    assert str(run / "config.yaml") in e.value.message
    assert "data: required field is missing" in e.value.problems
    assert "lora.rank: unknown key; did you mean 'lora.r'?" in e.value.problems
    with pytest.raises(TunewiseError, match=r"'.*nothing' is not a run directory \(no config.yaml\)"):
        RunDir(tmp_path / "nothing").config()


def test_run_dir_damaged_summary_is_named_and_status_is_unknown(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(TunewiseError, match="summary.json:1: damaged"):
        run.summary()
    assert run.status is None


# ---------------------------------------------------------------------------------------------- resolver


def test_resolve_aliases_and_hub_ids_without_loading_anything():
    t = resolve_target("tiny")
    assert (t.kind, t.path, t.is_tuned, t.model_source()) == ("alias", None, False, "tiny")
    t = resolve_target("HuggingFaceTB/SmolLM2-135M")
    assert (t.kind, t.path, t.base) == ("hub", None, None)


def test_resolve_run_directory_adapter_folder_and_model_folder(tmp_path, adapter_dir, micro_llama_dir):
    run = _run(tmp_path, adapter_dir, micro_llama_dir, method="qlora")
    t = resolve_target(run)
    assert (t.kind, t.path, t.base, t.run_dir, t.method) == ("run", run / "adapter", str(micro_llama_dir), run, "qlora")
    assert t.is_adapter and t.is_tuned and not t.classifier and t.weights == "adapter"
    assert resolve_target(run, base="other-base").base == "other-base"  # --base wins over the run's
    a = resolve_target(adapter_dir)  # an adapter folder names its base in adapter_config.json
    assert (a.kind, a.path, a.run, a.method) == ("adapter", adapter_dir, None, None)
    assert a.base == json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    m = resolve_target(micro_llama_dir)
    assert (m.kind, m.path, m.base, m.weights, m.is_tuned) == ("model", micro_llama_dir, None, "full", False)
    assert resolve_target(micro_llama_dir / "config.json").path == micro_llama_dir


def test_resolve_full_run_and_classifier_folder(tmp_path, micro_llama_dir):
    from transformers import AutoConfig, LlamaForSequenceClassification

    cfg = AutoConfig.from_pretrained(micro_llama_dir, num_labels=3)
    torch.manual_seed(0)
    run = tmp_path / "cls"
    LlamaForSequenceClassification(cfg).save_pretrained(run / "model")
    (run / "config.yaml").write_text(yaml.safe_dump({"base": "tiny", "method": "full", "num_labels": 3,
                                                     "task_type": "sequence-classification",
                                                     "data": {"train": "t.jsonl"}}))
    t = resolve_target(run)
    assert (t.kind, t.path, t.base, t.weights, t.classifier) == ("run", run / "model", "tiny", "full", True)
    folder = resolve_target(run / "model")  # the model folder alone: a classifier by its architecture
    assert folder.kind == "model" and folder.classifier and folder.is_tuned and folder.base is None


def test_resolve_refuses_what_is_none_of_these_and_says_what_was_expected(tmp_path, adapter_dir):
    with pytest.raises(TunewiseError) as e:
        resolve_target(tmp_path)
    assert e.value.message == f"'{tmp_path}' is neither {EXPECTED}"
    with pytest.raises(TunewiseError, match="does not exist") as e:
        resolve_target(tmp_path / "nope")
    assert EXPECTED in e.value.hint
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(TunewiseError, match="is a file"):
        resolve_target(tmp_path / "notes.txt")
    (tmp_path / "config.yaml").write_text("base: tiny\ndata: {train: t.jsonl}\n")  # started, no weights yet
    with pytest.raises(TunewiseError, match="run directory without adapter/ or model/: the run saved no weights"):
        resolve_target(tmp_path)
    with pytest.raises(TunewiseError, match=r"'tiny' is a base model \(alias\), not a local folder"):
        resolve_tuned("tiny")


def test_resolve_refuses_an_adapter_without_weights_or_base(tmp_path, adapter_dir):
    bad = tmp_path / "bad"
    shutil.copytree(adapter_dir, bad)
    (bad / "adapter_model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(TunewiseError, match="damaged weights file"):
        resolve_target(bad)
    (bad / "adapter_model.safetensors").unlink()
    with pytest.raises(TunewiseError, match="has no weights"):
        resolve_target(bad)
    shutil.copy(adapter_dir / "adapter_model.safetensors", bad)
    config = json.loads((bad / "adapter_config.json").read_text()) | {"base_model_name_or_path": None}
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(TunewiseError, match="does not name its base model"):
        resolve_target(bad)
    assert resolve_target(bad, base="tiny").base == "tiny"


# ---------------------------------------------------------------------------------------------- --step N


def _trained(tmp_path, micro_llama_dir, method="lora"):
    """A real run of 4 steps that keeps its checkpoints of steps 2 and 4."""
    from tunewise.config import validate_config
    from tunewise.train import train

    rows = [{"prompt": f"Q: {i} + {i} =", "completion": f" {2 * i}"} for i in range(16)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    cfg = validate_config({"base": str(micro_llama_dir), "method": method,
                           "data": {"train": str(tmp_path / "train.jsonl"), "max_seq_len": 32}, "lora": {"r": 4},
                           "train": {"max_steps": 4, "batch_size": 4, "lr": 1e-2, "save_every": 2}})
    return train(cfg, tmp_path / "run", quiet=True).run_dir


def test_step_n_is_the_adapter_of_checkpoint_n_through_the_cli(tmp_path, micro_llama_dir):
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from tunewise.cli import app
    from tunewise.targets import checkpoint_of

    run = _trained(tmp_path, micro_llama_dir)
    final = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    at = {s: resolve_target(run, step=s) for s in (2, 4)}
    assert all(t.kind == "run" and t.is_adapter and t.method == "lora" for t in at.values())
    last, mid = (load_file(str(at[s].path / "adapter_model.safetensors")) for s in (4, 2))
    assert set(last) == set(final) and all(torch.equal(last[k], final[k]) for k in final)  # the last step = output
    assert set(mid) == set(final) and not all(torch.equal(mid[k], final[k]) for k in final)
    assert resolve_target(checkpoint_of(run, 2)).path == at[2].path  # the checkpoint folder itself names it too
    with pytest.raises(TunewiseError, match=r"no complete checkpoint of step 3 \(kept: 2, 4\)"):
        resolve_target(run, step=3)

    def evaluate(*extra):
        res = CliRunner().invoke(app, ["eval", str(run), "--data", str(tmp_path / "test.jsonl"), "--json", *extra])
        assert res.exit_code == 0, res.output
        return json.loads(res.output[res.output.index("{"):])

    out = {s: evaluate("--step", str(s)) for s in (2, 4)}
    plain = evaluate()
    assert (run / "eval" / "test-step-2" / "predictions.jsonl").is_file() and (run / "eval" / "test").is_dir()
    rows = {k: [json.loads(x)["prediction"] for x in (run / "eval" / k / "predictions.jsonl").read_text().splitlines()]
            for k in ("test", "test-step-4", "test-step-2")}
    assert rows["test-step-4"] == rows["test"]  # checkpoint 4 is the final adapter: the same greedy answers
    assert out[4]["metrics"] == plain["metrics"] and out[2]["target"].endswith("step-0000002")


def test_step_of_a_full_run_or_a_folder_that_is_no_run_is_refused(tmp_path, micro_llama_dir, adapter_dir):
    run = _trained(tmp_path, micro_llama_dir, method="full")
    with pytest.raises(TunewiseError, match="checkpoint of a full fine-tune"):
        resolve_target(run, step=2)
    with pytest.raises(TunewiseError, match="is not a run directory"):
        resolve_target(adapter_dir, step=2)


def test_checkpoint_layout_names_match_the_writer(tmp_path):
    """targets.py reads what train/checkpoint.py writes (targets sits below train, so the names are repeated)."""
    from tunewise.targets import COMPLETE, STEP_PREFIX, TRAINABLE
    from tunewise.train.checkpoint import TrainState, save_checkpoint

    w = torch.nn.Parameter(torch.ones(2))
    saved = save_checkpoint(tmp_path, TrainState(40, 0, 0, 0), {"w": w.detach()}, torch.optim.SGD([w], lr=0.1), {})
    assert saved.name.startswith(STEP_PREFIX) and int(saved.name.removeprefix(STEP_PREFIX)) == 40
    assert (saved / COMPLETE).is_file() and (saved / TRAINABLE).is_file()
