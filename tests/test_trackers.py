"""train.report_to: TensorBoard, W&B (offline) and MLflow (file store) read back with each library's own reader;
train.eval_every and train.keep_best; the removed train.tensorboard key."""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tunewise.config import load_run_config, validate_config
from tunewise.errors import ConfigError, TunewiseError
from tunewise.train import train
from tunewise.train.checkpoint import latest_checkpoint

pytestmark = pytest.mark.integration

STEPS, EVAL_EVERY = 12, 2


def _data(path: Path, n: int, seed: int, repeat: bool) -> Path:
    import random

    from tunewise.zoo.corpus import arithmetic_fact

    rng = random.Random(seed)
    rows = [{"prompt": f"Q: {q}", "completion": a}
            for q, a in (arithmetic_fact(rng) if not repeat else ("1 + 1 =", " 2") for _ in range(n))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(base: Path, tmp: Path, **train_kw) -> dict:
    """Full fine-tuning on one repeated fact at a high constant lr: the eval loss on other facts falls for a few
    steps, then rises as the model overfits, so the best eval step is not the last."""
    return {"base": str(base), "method": "full",
            "data": {"train": str(_data(tmp / "train.jsonl", 32, 0, True)),
                     "eval": str(_data(tmp / "eval.jsonl", 16, 1, False)), "max_seq_len": 32},
            "train": {"max_steps": STEPS, "batch_size": 8, "lr": 0.02, "scheduler": "constant", "warmup_ratio": 0,
                      "eval_every": EVAL_EVERY, "save_every": STEPS, **train_kw},
            "guards": {"grad_norm_limit": 1.0}}  # below most of the real norms: guard events to log


@pytest.fixture(scope="module")
def tracked(micro_llama_dir, tmp_path_factory, monkeypatch_module):
    tmp = tmp_path_factory.mktemp("tracked")
    monkeypatch_module.delenv("WANDB_MODE", raising=False)
    monkeypatch_module.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = validate_config(_cfg(micro_llama_dir, tmp, keep_best=True, report_to=["tensorboard", "wandb", "mlflow"]))
    res = train(cfg, tmp / "run", quiet=True)
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines() if x]
    return res, rows


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _series(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in rows if key in r]


def _guard_steps(rows: list[dict], guard: str = "grad_norm") -> list[int]:
    steps = [r["step"] for r in rows if any(e["guard"] == guard for e in r.get("events", []))]
    assert steps  # the test's guard setting must have fired
    return steps


def test_eval_every_and_keep_best_output_is_the_best_step(tracked):
    res, rows = tracked
    s = res.summary.as_dict()
    evals = _series(rows, "eval_loss")
    assert [step for step, _ in evals] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))  # none twice at the end
    assert [tuple(e) for e in s["eval_losses"]] == evals
    best_step, best_loss = min(evals, key=lambda e: e[1])
    assert (s["best_step"], s["best_eval_loss"]) == (best_step, best_loss)
    assert best_step < STEPS and best_loss < evals[-1][1]  # the case that matters: the last step is worse
    best = load_file(res.run_dir / "best" / "trainable.safetensors")
    last = load_file(latest_checkpoint(res.run_dir / "checkpoints") / "trainable.safetensors")
    output = load_file(res.run_dir / "model" / "model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(output[key], best[key]) and not torch.equal(output[key], last[key])


def test_tensorboard_event_files_hold_the_metrics(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res, rows = tracked
    acc = EventAccumulator(str(res.run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    for tag, key in [("train/loss", "loss"), ("train/lr", "lr"), ("train/grad_norm", "grad_norm"),
                     ("train/tokens_per_s", "tokens_per_s"), ("train/rss_mb", "rss_mb"), ("eval/loss", "eval_loss")]:
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        want = [(step, float(np.float32(v))) for step, v in _series(rows, key)]  # TensorBoard stores float32
        assert got == want, tag
    assert [e.step for e in acc.Tensors("guard/grad_norm/text_summary")] == _guard_steps(rows)
    text = {t: acc.Tensors(t)[-1].tensor_proto.string_val[0].decode() for t in ("config/text_summary",
                                                                                 "summary/text_summary")}
    assert "report_to:" in text["config/text_summary"] and "eval_every: 2" in text["config/text_summary"]
    assert f'"best_step": {res.summary.best_step}' in text["summary/text_summary"]


def test_mlflow_file_store_holds_the_metrics(tracked):
    from mlflow.tracking import MlflowClient

    res, rows = tracked
    run_id = json.loads((res.run_dir / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(res.run_dir / "mlruns").resolve().as_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "completed"
    for name, key in [("train/loss", "loss"), ("train/grad_norm", "grad_norm"), ("eval/loss", "eval_loss")]:
        got = [(m.step, m.value) for m in client.get_metric_history(run_id, name)]
        assert sorted(got) == _series(rows, key), name
    assert run.data.params["train.eval_every"] == "2" and run.data.params["method"] == "full"
    assert run.data.params["train.lr"] == "0.02"
    assert run.data.metrics["summary/best_step"] == res.summary.best_step
    assert [m.step for m in client.get_metric_history(run_id, "guard/grad_norm")] == _guard_steps(rows)
    summary = json.loads(Path(client.download_artifacts(run_id, "summary.json")).read_text())
    assert summary["guard_events"] == res.summary.guard_events


def wandb_records(path: Path):
    """The records of a .wandb file: W&B's record framing (the LevelDB log format, 32 KiB blocks, CRC-32 per
    chunk) parsed here, each record decoded with W&B's own protobuf schema. wandb 0.2x ships no Python reader
    for it any more (its Go core reads these files), and an offline run has nothing else that holds the history."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", raw[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0)
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", raw[pos: pos + 7])
        data = raw[pos + 7: pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        assert zlib.crc32(data, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad checksum at {pos}"
        pending += data
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            record = pb.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_wandb_offline_run_holds_the_metrics(tracked):
    res, rows = tracked
    run_id = json.loads((res.run_dir / "trackers.json").read_text())["wandb"]
    [path] = (res.run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    history: dict[str, list[tuple[int, float]]] = {}
    config, summary, exit_code = {}, {}, None
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for k, v in items.items():
                history.setdefault(k, []).append((items["_step"], v))
        elif kind == "run":
            config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
        elif kind == "exit":
            exit_code = r.exit.exit_code
    for name, key in [("train/loss", "loss"), ("train/lr", "lr"), ("eval/loss", "eval_loss")]:
        assert history[name] == _series(rows, key), name
    assert [step for step, _ in history["guard/grad_norm"]] == _guard_steps(rows)
    train_cfg = config["train"]["value"] if "value" in config["train"] else config["train"]
    assert train_cfg["keep_best"] is True and train_cfg["report_to"] == ["tensorboard", "wandb", "mlflow"]
    assert summary["best_step"] == res.summary.best_step and summary["status"] == "completed"
    assert exit_code == 0


def test_a_missing_tracker_library_names_the_extra(micro_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError, as when not installed
    cfg = validate_config(_cfg(micro_llama_dir, tmp_path, report_to="wandb"))
    with pytest.raises(TunewiseError) as e:
        train(cfg, tmp_path / "run", quiet=True)
    assert "'wandb' package" in str(e.value) and "tunewise[tracking]" in e.value.hint
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_report_to_and_best_config_rules(tmp_path):
    base = {"data": {"train": "t.jsonl"}}
    assert validate_config({**base, "train": {"report_to": "mlflow"}}).train.report_to == ["mlflow"]
    assert validate_config({**base, "train": {"report_to": "none"}}).train.report_to == []
    with pytest.raises(ConfigError, match="report_to"):
        validate_config({**base, "train": {"report_to": ["neptune"]}})
    with pytest.raises(ConfigError, match="train.keep_best needs a validation set: set data.eval"):
        validate_config({**base, "train": {"keep_best": True}})
    old = tmp_path / "old.yaml"
    old.write_text("data: {train: t.jsonl}\ntrain: {tensorboard: true}\n")
    with pytest.raises(ConfigError, match=r"train.tensorboard: unknown key; did you mean 'train.report_to'"):
        load_run_config(old)
    # A run directory written before report_to existed holds `tensorboard: false`: its own config still loads
    # (so --resume works on it), while the same key in a user's config is the error above.
    run_dir_config = tmp_path / "config.yaml"
    run_dir_config.write_text("data: {train: t.jsonl}\ntrain: {tensorboard: false, epochs: 2}\n")
    assert load_run_config(run_dir_config, run_dir_config=True).train.epochs == 2
    with pytest.raises(ConfigError, match="did you mean 'train.report_to'"):
        load_run_config(run_dir_config)
    old.write_text("data: {train: t.jsonl}\ntrain: {tensorboard: true}\n")
    with pytest.raises(ConfigError, match="did you mean 'train.report_to'"):
        load_run_config(old, run_dir_config=True)  # true was never inert: say so


def test_resume_after_a_kill_continues_the_same_tracked_runs(tracked, micro_llama_dir, tmp_path):
    """Steps 5-7 are logged, then the process dies with only the step-4 checkpoint: the resumed run logs them again.
    TensorBoard's readers drop the first copies (purge_step); MLflow keeps both in the same run."""
    import shutil

    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = validate_config(_cfg(micro_llama_dir, tmp_path, keep_best=True, report_to=["tensorboard", "mlflow"]))
    run = tmp_path / "run"
    train(cfg, run, quiet=True, stop_at_step=4)
    saved = tmp_path / "step-4"
    shutil.copytree(latest_checkpoint(run / "checkpoints"), saved)
    ids = (run / "trackers.json").read_text()
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    run_id = json.loads(ids)["mlflow"]
    assert client.get_run(run_id).info.status == "KILLED"  # stopped, not finished
    train(cfg, run, resume=True, quiet=True, stop_at_step=7)
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(saved, run / "checkpoints" / saved.name.replace("step-4", "step-0000004"))
    train(cfg, run, resume=True, quiet=True, stop_at_step=7)  # logs steps 5-7 a second time
    # from step 7: the best step (6) is not evaluated again; a changed setting a resume allows reaches MLflow
    changed = validate_config({**_cfg(micro_llama_dir, tmp_path, keep_best=True, report_to=["tensorboard", "mlflow"]),
                               "preserve": {"limit": 8}})
    res = train(changed, run, resume=True, quiet=True)
    assert res.summary.status == "completed" and (run / "trackers.json").read_text() == ids

    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    # step 4 ends an epoch: the resumed run does not take its eval again
    assert [step for step, _ in _series(rows, "eval_loss")] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    uninterrupted = tracked[0].summary.as_dict()
    assert res.summary.best_step == uninterrupted["best_step"] < 7  # found before the last resume, and kept
    assert res.summary.best_eval_loss == pytest.approx(uninterrupted["best_eval_loss"], abs=1e-6)

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [
        (step, float(np.float32(v))) for step, v in _series(rows, "loss")]

    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.params["preserve.limit"] == "64"  # as first logged
    assert client.get_run(run_id).data.tags["resumed.preserve.limit"] == "8"
    by_step: dict[int, list[float]] = {}
    for m in client.get_metric_history(run_id, "train/loss"):
        by_step.setdefault(m.step, []).append(m.value)
    assert sorted(by_step) == list(range(1, STEPS + 1))
    assert sorted(s for s, values in by_step.items() if len(values) > 1) == [5, 6, 7]
    assert all(v in by_step[step] for step, v in _series(rows, "loss"))


def test_a_run_that_fails_ends_its_tracked_run_as_failed(micro_llama_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    from tunewise.train.loop import NonFiniteLoss

    raw = _cfg(micro_llama_dir, tmp_path, report_to=["mlflow"], lr=1e12, max_grad_norm=None)
    with pytest.raises(NonFiniteLoss):
        train(validate_config(raw), tmp_path / "run", quiet=True)
    run_id = json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(tmp_path / "run" / "mlruns").resolve().as_uri())
    assert client.get_run(run_id).info.status == "FAILED"


def test_mlflow_tracking_uri_and_experiment_name_are_honoured(micro_llama_dir, tmp_path):
    """MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME, as MLflow and Hugging Face's callback read them: the run is
    found there with MLflow's own reader, nothing is written to RUN/mlruns, and trackers.json says where it went."""
    import yaml
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from tunewise.cli import app

    raw = _cfg(micro_llama_dir, tmp_path, report_to=["mlflow"])
    raw["train"] |= {"max_steps": 2, "eval_every": 2, "save_every": 2}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    store = (tmp_path / "elsewhere" / "store").as_uri()
    env = {"MLFLOW_TRACKING_URI": store, "MLFLOW_EXPERIMENT_NAME": "invoices"}
    res = CliRunner().invoke(app, ["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"), "-q"],
                             env=env)
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "run" / "mlruns").exists()
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("invoices")
    [found] = client.search_runs([exp.experiment_id])
    ids = json.loads((tmp_path / "run" / "trackers.json").read_text())
    assert ids == {"mlflow": found.info.run_id, "mlflow_tracking_uri": store}
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "train/loss")] == [1, 2]
