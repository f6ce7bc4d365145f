"""One stage of a multi-run command: train a run, then evaluate and analyze it; reuse it when nothing changed.

`compare` (one stage per method, trained in a subprocess so each method's peak memory is its own) and `continual`
(one stage per task, in process) run their stages here, and all three (with `tunewise pilot`) describe a stage's
training as a StageSpec, whose RunConfig is built here.

The one cache rule: a stage is keyed on the base's fingerprint, the text of its resolved run config and the
digests of the data it trains on and is scored on (`stage_key`). Its record (a small JSON file) holds that key;
a stage whose record is finished under the current key is reused, one that was interrupted under it is resumed
from its last checkpoint, and anything else (another base, setting or data; no record) is started again.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.config import RunConfig, validate_config
from tunewise.fileio import atomic_write_json, file_digest
from tunewise.models import base_fingerprint
from tunewise.rundir import RunDir
from tunewise.userfiles import read_json_file

TRAINING, FINISHED = "training", "finished"


@dataclass(frozen=True)
class StageSpec:
    """What one stage trains, in the terms compare, continual and the pilot share; `run_config()` is its RunConfig.
    lr None: train sets it from the model's size; max_steps wins over epochs; `labels` makes it a sequence
    classifier over them (an encoder base), which has no generative probes."""

    base: str
    method: str
    train_file: Path
    rank: int
    max_seq_len: int
    batch_size: int
    seed: int
    lr: float | None = None
    epochs: float | None = None
    max_steps: int | None = None
    eval_file: Path | None = None
    log_every: int | None = None
    probes: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None

    def run_config(self) -> RunConfig:
        train: dict[str, Any] = {"batch_size": self.batch_size, "seed": self.seed}
        train |= {"max_steps": self.max_steps} if self.max_steps else {"epochs": self.epochs}
        if self.lr is not None:
            train["lr"] = self.lr
        if self.log_every is not None:
            train["log_every"] = self.log_every
        data: dict[str, Any] = {"train": str(self.train_file), "max_seq_len": self.max_seq_len}
        if self.eval_file is not None:
            data["eval"] = str(self.eval_file)
        cfg: dict[str, Any] = {"base": self.base, "method": self.method, "data": data, "lora": {"r": self.rank},
                               "train": train}
        if self.probes is not None:
            cfg["preserve"] = {"probes": list(self.probes), "limit": 48}
        if self.labels:
            cfg |= {"task_type": "sequence-classification", "num_labels": len(self.labels),
                    "preserve": {"probes": []}}
        return validate_config(cfg)


def stage_key(base: str, config_text: str, data_files: Sequence[Path]) -> str:
    """The cache key of a stage: the base's fingerprint, its run config's text and its data files' digests."""
    digests = [file_digest(f) for f in data_files]
    return hashlib.sha256(f"{base_fingerprint(base)}\n{config_text}\n{digests}".encode()).hexdigest()[:16]


@dataclass
class Stage:
    """A stage's places: `folder` is removed when the stage starts again (it holds `run_dir`, and whatever the
    stage writes besides); `record` is its record file; `key` is its stage_key."""

    folder: Path
    run_dir: Path
    record: Path
    key: str

    def recorded(self) -> dict | None:
        """The record, when it was written under this key."""
        if not self.record.is_file():
            return None
        record = read_json_file(self.record, "stage record")
        return record if isinstance(record, dict) and record.get("cache_key") == self.key else None

    def finished(self) -> dict | None:
        """The record of a stage finished under this key (records from before `status` existed were finished)
        whose run is still there, complete."""
        record = self.recorded()
        done = record is not None and record.get("status", FINISHED) == FINISHED
        return record if done and RunDir(self.run_dir).completed else None

    def run(self, train: Callable[[bool], None], finish: Callable[[], dict] = dict) -> dict:
        """Reuse, resume or start the stage: `train(resume)` trains run_dir (resume: continue its checkpoint),
        `finish()` evaluates and analyzes it; its dict is recorded with the key. Returns the record, with
        `reused: True` when nothing had to run."""
        done = self.finished()
        if done is not None:
            return done | {"reused": True}
        run = RunDir(self.run_dir)
        keep = self.recorded() is not None and (run.resumable or run.completed)
        if not keep and self.folder.exists():
            shutil.rmtree(self.folder)  # another setup's, or died before its first checkpoint: start again
        atomic_write_json(self.record, {"cache_key": self.key, "status": TRAINING})
        if not run.completed:  # a stage that died after training only finishes
            train(keep)
        record = {**finish(), "cache_key": self.key, "status": FINISHED}
        atomic_write_json(self.record, record)
        return record
