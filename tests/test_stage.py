"""The stage runner compare and continual share: one cache key, reuse when finished, resume when interrupted."""

from __future__ import annotations

import json
import shutil

import pytest

from tunewise.stage import FINISHED, TRAINING, Stage, StageSpec, stage_key


@pytest.fixture()
def base(tmp_path, micro_llama_dir):
    folder = tmp_path / "base"
    shutil.copytree(micro_llama_dir, folder)
    return folder


def test_stage_key_changes_with_base_files_config_and_data(tmp_path, base):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    key = stage_key(str(base), "method: lora\n", [data])
    assert key == stage_key(str(base), "method: lora\n", [data]) and len(key) == 16
    assert stage_key(str(base), "method: full\n", [data]) != key
    data.write_text('{"prompt": "a", "completion": "c"}\n')
    changed_data = stage_key(str(base), "method: lora\n", [data])
    assert changed_data != key
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps(config | {"rope_theta": 5000.0}))
    assert stage_key(str(base), "method: lora\n", [data]) != changed_data  # the base rewritten in place


def test_a_stage_spec_is_a_checked_run_config(tmp_path):
    cfg = StageSpec("tiny", "lora", tmp_path / "t.jsonl", rank=4, max_seq_len=64, batch_size=2, seed=1, max_steps=3,
                    epochs=2.0, probes=("lm",), labels=("neg", "pos"), log_every=1).run_config()
    assert (cfg.lora.r, cfg.train.max_steps, cfg.train.lr, cfg.task_type, cfg.num_labels) == (
        4, 3, None, "sequence-classification", 2)
    assert cfg.preserve.probes == []  # a classifier has no generative probes


class FakeTrainer:
    """Stands in for `tunewise train`: writes what it writes (config.yaml, a checkpoint, then summary.json), or
    stops after the checkpoint like an interrupted run."""

    def __init__(self, run_dir, stop_early: bool = False):
        self.run_dir, self.stop_early, self.calls = run_dir, stop_early, []

    def __call__(self, resume: bool) -> None:
        self.calls.append(resume)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text("base: tiny\n")
        (self.run_dir / "checkpoints" / "step-1").mkdir(parents=True, exist_ok=True)
        if self.stop_early:
            raise KeyboardInterrupt
        (self.run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))


def _stage(tmp_path, key="k1"):
    folder = tmp_path / "stage"
    return Stage(folder, folder / "run", folder / "stage.json", key)


def test_finished_stage_is_reused_and_a_changed_key_starts_again(tmp_path):
    stage = _stage(tmp_path)
    trainer = FakeTrainer(stage.run_dir)
    first = stage.run(trainer, lambda: {"score": 0.5})
    assert first == {"score": 0.5, "cache_key": "k1", "status": FINISHED} and trainer.calls == [False]
    assert json.loads(stage.record.read_text()) == first
    assert stage.run(trainer, lambda: {"score": 0.9}) == first | {"reused": True} and trainer.calls == [False]
    (stage.folder / "stale.txt").write_text("from the other setup")
    other = _stage(tmp_path, "k2")
    assert other.run(trainer, lambda: {"score": 0.7})["score"] == 0.7 and trainer.calls == [False, False]
    assert not (stage.folder / "stale.txt").exists()  # the old setup's files went with it


def test_interrupted_stage_resumes_and_one_without_checkpoint_starts_again(tmp_path):
    stage = _stage(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        stage.run(FakeTrainer(stage.run_dir, stop_early=True))
    assert json.loads(stage.record.read_text()) == {"cache_key": "k1", "status": TRAINING}
    trainer = FakeTrainer(stage.run_dir)
    assert stage.run(trainer)["status"] == FINISHED and trainer.calls == [True]  # resumed from its checkpoint

    again = _stage(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        again.run(FakeTrainer(again.run_dir, stop_early=True))
    shutil.rmtree(again.run_dir / "checkpoints")  # died before its first checkpoint
    trainer = FakeTrainer(again.run_dir)
    again.run(trainer)
    assert trainer.calls == [False]


def test_trained_stage_whose_finish_failed_only_finishes(tmp_path):
    stage = _stage(tmp_path)
    trainer = FakeTrainer(stage.run_dir)

    def broken() -> dict:
        raise RuntimeError("evaluation crashed")

    with pytest.raises(RuntimeError):
        stage.run(trainer, broken)
    assert stage.run(trainer, lambda: {"score": 1.0})["score"] == 1.0 and trainer.calls == [False]


def test_record_from_before_status_counts_as_finished(tmp_path):
    """continual's stage.json held the result and its key, no status: still reused after the upgrade."""
    stage = _stage(tmp_path)
    trainer = FakeTrainer(stage.run_dir)
    trainer(False)
    stage.record.write_text(json.dumps({"stage": 1, "scores": {"sql": 0.5}, "cache_key": "k1"}))
    assert stage.run(trainer)["reused"] and trainer.calls == [False]


def test_finished_record_whose_run_was_deleted_trains_again(tmp_path):
    stage = _stage(tmp_path)
    trainer = FakeTrainer(stage.run_dir)
    stage.run(trainer)
    shutil.rmtree(stage.run_dir)
    assert "reused" not in stage.run(trainer) and trainer.calls == [False, False]
