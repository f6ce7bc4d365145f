"""`train.keep_best`: the trainable weights of the step with the lowest validation loss, kept in run_dir/best.

Written as a whole folder and moved into place (fileio.replace_dir), so a kill mid-save leaves the previous best.
Separate from checkpoints/ on purpose: resume goes on from the latest step, while the output is the best one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tunewise.fileio import atomic_write_json, replace_dir

WEIGHTS, META = "trainable.safetensors", "best.json"


class BestKeeper:
    def __init__(self, root: Path):
        self.root = root
        self.step: int | None = None
        self.loss: float | None = None

    def load(self) -> None:
        """On resume: the best the run had found (a new run ignores, then replaces, what an earlier try left)."""
        meta = self.root / META
        if meta.is_file() and (self.root / WEIGHTS).is_file():
            found = json.loads(meta.read_text())
            self.step, self.loss = found["step"], found["eval_loss"]

    def observe(self, step: int, loss: float, trainable: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """Keep the weights if `loss` beats the best so far; True when it did."""
        if self.loss is not None and not loss < self.loss:
            return False
        tmp = self.root.with_name(f".{self.root.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in trainable().items()}, str(tmp / WEIGHTS))
        atomic_write_json(tmp / META, {"step": step, "eval_loss": loss})
        replace_dir(tmp, self.root)
        self.step, self.loss = step, loss
        return True

    def weights(self) -> dict[str, torch.Tensor] | None:
        return load_file(str(self.root / WEIGHTS)) if self.step is not None else None
