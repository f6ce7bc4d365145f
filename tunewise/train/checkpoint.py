"""Checkpoints that are either complete or invisible.

A checkpoint is written into a temporary folder, its COMPLETE marker written last, and only then renamed to
checkpoints/step-N; older checkpoints are deleted after that. Resume only ever sees renamed folders with the marker,
so a process killed mid-save (even by SIGKILL) leaves nothing that resume would pick up half-written.

Before the marker, SHA256SUMS.json records every file's sha256; resume verifies it (usable_checkpoint) and falls
back to the previous complete checkpoint when the latest was damaged on disk afterwards. A save that fails (a full
disk) removes its temporary folder, leaves the previous checkpoints alone and stops the run (CheckpointWriteError).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_json, sha256_file

MARKER = "COMPLETE"
SUMS = "SHA256SUMS.json"
EXIT_CHECKPOINT_WRITE = 4


class CheckpointWriteError(TunewiseError):
    """A checkpoint could not be written (full disk, quota, I/O error); the previous ones are intact."""

    exit_code = EXIT_CHECKPOINT_WRITE


def write_failed(path: Path, err: BaseException, previous: Path | None) -> CheckpointWriteError:
    """The error that stops the run when writing `path` failed with `err`."""
    text = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
    full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text \
        or "os error 28" in text
    what = "the disk is full" if full else "writing failed"
    kept = f"{previous.name} is intact" if previous else "no earlier checkpoint exists"
    return CheckpointWriteError(f"checkpoint {path.name}: {what} ({text}); the run stopped and {kept}",
                                "free space (or point --out at a bigger disk), then continue with "
                                f"tunewise train --resume {path.parent.parent}")


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


def rng_state() -> dict:
    # Only torch's RNG drives randomness in the loop (dropout); the data order is a pure function of seed+epoch.
    rng = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda_rng"] = torch.cuda.get_rng_state()
    return rng


def set_rng_state(blob: dict) -> None:
    torch.set_rng_state(blob["torch_rng"])
    if "cuda_rng" in blob and torch.cuda.is_available():
        torch.cuda.set_rng_state(blob["cuda_rng"])


def state_record(state: TrainState, extra: dict) -> dict:
    return {"step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch,
            "tokens": state.tokens, **extra}


def save_checkpoint(root: Path, state: TrainState, trainable: dict[str, torch.Tensor], optimizer,
                    extra: dict, keep: int = 2) -> Path:
    final, tmp = begin(root, state.step, os.getpid())
    try:
        save_file({k: v.contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), **rng_state()}, tmp / "optimizer.pt")
        atomic_write_json(tmp / "state.json", state_record(state, extra))
        return publish(tmp, final, keep)
    except Exception as e:  # safetensors reports a failed write as its own error type, not OSError
        abandon(tmp)
        if isinstance(e, (OSError, RuntimeError)) or type(e).__name__ == "SafetensorError":
            raise write_failed(final, e, latest_checkpoint(root)) from e
        raise


def begin(root: Path, step: int, tag: int | str) -> tuple[Path, Path]:
    """The final and (fresh, empty) temporary folder of the checkpoint of `step`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}-{tag}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return final, tmp


def abandon(tmp: Path) -> None:
    """Remove a failed save's temporary folder (best effort: the disk may still be full)."""
    shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, final: Path, keep: int) -> Path:
    """fsync the files, record their sha256, write the marker, rename into place, then drop all but `keep`."""
    files = sorted(f for f in tmp.rglob("*") if f.is_file())
    for f in files:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    atomic_write_json(tmp / SUMS, {str(f.relative_to(tmp)): sha256_file(f) for f in files})
    _write_marker(tmp / MARKER)
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    for old in complete_checkpoints(final.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_marker(path: Path) -> None:
    with open(path, "w") as f:
        f.write("ok\n")
        f.flush()
        os.fsync(f.fileno())


def damaged_file(path: Path) -> str | None:
    """The first file of checkpoint `path` that is missing or differs from its recorded sha256, else None.
    Checkpoints written before checksums were recorded have no SHA256SUMS.json and pass unverified."""
    sums_path = path / SUMS
    if not sums_path.is_file():
        return None
    try:
        sums = json.loads(sums_path.read_text())
    except (OSError, ValueError):
        return SUMS
    for name, digest in sums.items():
        f = path / name
        if not f.is_file():
            return f"{name} (missing)"
        if sha256_file(f) != digest:
            return name
    return None


def usable_checkpoint(root: Path, warn: Callable[[str], None] | None = None) -> Path | None:
    """The newest complete checkpoint whose files match their sha256; each damaged newer one is skipped with a
    warning that names its bad file."""
    warn = warn or (lambda m: print(m, file=sys.stderr))
    for ckpt in reversed(complete_checkpoints(root)):
        bad = damaged_file(ckpt)
        if bad is None:
            return ckpt
        warn(f"warning: checkpoint {ckpt} is damaged: {bad} does not match the sha256 recorded when it was saved; "
             "skipping it for the previous complete checkpoint")
    return None


def complete_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / MARKER).is_file())


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def read_state(path: Path) -> tuple[TrainState, dict]:
    meta = json.loads((path / "state.json").read_text())
    return TrainState(meta.pop("step"), meta.pop("epoch"), meta.pop("batch_in_epoch"), meta.pop("tokens")), meta


def load_checkpoint(path: Path, optimizer) -> tuple[TrainState, dict[str, torch.Tensor], dict]:
    state, meta = read_state(path)
    blob = torch.load(path / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    set_rng_state(blob)
    return state, load_file(str(path / "trainable.safetensors")), meta
