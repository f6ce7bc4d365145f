"""What `train --resume` may continue: checked before anything is loaded or written.

A finished run is reported and left byte-for-byte alone; a change to a setting that fixes the model's shape or
method (the checkpoint's tensors and optimizer state belong to the old one) is refused by name.
"""

from __future__ import annotations

from pathlib import Path

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError
from tunewise.rundir import CONFIG, RunDir

# Settings a checkpoint is bound to: its tensors, their scaling, the optimizer state or the model itself.
SHAPE_FIELDS = ("base", "method", "task_type", "num_labels", "lora.r", "lora.alpha", "lora.target_modules",
                "lora.use_dora", "lora.use_rslora", "lora.init", "lora.trainable_tokens", "train.optimizer")


def _get(cfg: RunConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def check_resumable(run_dir: Path, cfg: RunConfig | None = None) -> None:
    """`run_dir` is a run train wrote; with `cfg`, it changes none of SHAPE_FIELDS from the run's own config."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a run directory" if run_dir.exists() else "does not exist"
        raise TunewiseError(f"--resume '{run_dir}' {what}", "pass the folder train wrote")
    if not RunDir.started(run_dir):
        raise TunewiseError(f"--resume '{run_dir}' is not a run directory (no {CONFIG})",
                            "pass the folder train wrote")
    if cfg is None:
        return
    saved = RunDir(run_dir).config()
    changed = [f"{f} ({_get(saved, f)!r} -> {_get(cfg, f)!r})" for f in SHAPE_FIELDS if _get(saved, f) != _get(cfg, f)]
    if changed:
        raise TunewiseError(f"--resume {run_dir}: cannot continue with changed {', '.join(changed)}; the checkpoint "
                            "belongs to the run's own settings",
                            "drop those --set values to resume, or start a new run with --out")


def finished_summary(run_dir: Path) -> dict | None:
    """The run's summary when it completed (nothing left to resume), else None."""
    try:
        summary = RunDir(run_dir).summary()
    except TunewiseError as e:
        raise TunewiseError(e.message, "move it away to resume from the last checkpoint") from None
    return summary if summary is not None and summary.get("status") == "completed" else None
