"""Checkpoints that are either complete or invisible.

A checkpoint is written into a temporary folder, its COMPLETE marker written last, and only then renamed to
checkpoints/step-N; older checkpoints are deleted after that. Resume only ever sees renamed folders with the marker,
so a process killed mid-save (even by SIGKILL) leaves nothing that resume would pick up half-written.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tunewise.fileio import atomic_write_json

MARKER = "COMPLETE"


@dataclass
class TrainState:
    """Where training is: the next step to run and the data position it corresponds to."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # global batches of this epoch already consumed
    tokens: int = 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(root: Path, state: TrainState, trainable: dict[str, torch.Tensor], optimizer,
                    extra: dict, keep: int = 1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:07d}"
    tmp = root / f".tmp-step-{state.step:07d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    # Only torch's RNG drives randomness in the loop (dropout); the data order is a pure function of seed+epoch.
    rng = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda_rng"] = torch.cuda.get_rng_state()
    torch.save({"optimizer": optimizer.state_dict(), **rng}, tmp / "optimizer.pt")
    atomic_write_json(tmp / "state.json", {"step": state.step, "epoch": state.epoch,
                                           "batch_in_epoch": state.batch_in_epoch, "tokens": state.tokens, **extra})
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    (tmp / MARKER).write_text("ok\n")
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / MARKER).is_file())


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(path: Path, optimizer) -> tuple[TrainState, dict[str, torch.Tensor], dict]:
    import json

    meta = json.loads((path / "state.json").read_text())
    blob = torch.load(path / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    torch.set_rng_state(blob["torch_rng"])
    if "cuda_rng" in blob and torch.cuda.is_available():
        torch.cuda.set_rng_state(blob["cuda_rng"])
    state = TrainState(meta.pop("step"), meta.pop("epoch"), meta.pop("batch_in_epoch"), meta.pop("tokens"))
    return state, load_file(str(path / "trainable.safetensors")), meta
