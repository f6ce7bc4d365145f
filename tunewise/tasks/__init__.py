"""Built-in tasks (generators + scorers) and retention probes; `make_task` writes a task directory.

    structured  sentence -> meaning representation (ViGGO shape)      scorer mr
    classify    message -> intent label                                 scorer classify
    sql         schema + question -> SQL on a generated SQLite db        scorer sql (execution accuracy)
    math        word problem -> worked solution ending '#### N'          scorer number
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_json, atomic_write_text
from tunewise.ownership import mark_dir
from tunewise.tasks import classify, math_task, sql, structured
from tunewise.tasks.base import DEFAULT_SIZES, META_FILE, SPLITS, TaskSpec, dumps_jsonl, generate_split

TASKS: dict[str, TaskSpec] = {s.name: s for s in (structured.SPEC, classify.SPEC, sql.SPEC, math_task.SPEC)}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise TunewiseError(f"unknown task '{name}'", f"built-in tasks: {', '.join(TASKS)}")
    return TASKS[name]


def task_meta(spec: TaskSpec, seed: int, sizes: dict[str, int], extra: dict[str, Any]) -> dict[str, Any]:
    """meta.json: everything `tunewise eval` needs to generate and score this task's files."""
    options = {**spec.scorer_options, **extra}
    meta: dict[str, Any] = {
        "task": spec.name,
        "description": spec.description,
        "format": "prompt_completion",
        "scorer": spec.scorer,
        "scorer_options": options,
        "stop": spec.stop,
        "max_new_tokens": spec.max_new_tokens,
        "seed": seed,
        "sizes": sizes,
        "files": {s: f"{s}.jsonl" for s in SPLITS},
    }
    if "db" in extra:
        meta["db"] = extra["db"]
    if "labels" in options:
        meta["labels"] = options["labels"]
    return meta


def make_task(name: str, out: str | Path, sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, Any]:
    """Write train/validation/test JSONL, meta.json (and side files such as db.sqlite) into `out`."""
    spec = get_task(name)
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    for split, n in sizes.items():
        if split not in SPLITS:
            raise TunewiseError(f"unknown split '{split}'", f"splits are {', '.join(SPLITS)}")
        if n < 0:
            raise TunewiseError(f"--{split} must be >= 0 (got {n})", "give the number of examples for that split")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = spec.prepare(out, seed) if spec.prepare else {}
    ctx = {"seed": seed, "out": out}
    for split in SPLITS:
        examples = generate_split(spec, split, sizes[split], seed, ctx)
        atomic_write_text(out / f"{split}.jsonl", dumps_jsonl([e.record() for e in examples]))
    meta = task_meta(spec, seed, sizes, extra)
    atomic_write_json(out / META_FILE, meta)
    mark_dir(out, "task", name)  # so a later `tasks make` of another task into this folder is refused
    return meta


def ensure_task(name: str, out: str | Path, sizes: dict[str, int], seed: int) -> Path:
    """`out` holding task `name` at these sizes and seed: kept when it already does (repeated commands train and
    score on the same files), written afresh when it holds another task, other sizes or another seed."""
    out = Path(out)
    meta_path = out / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if (meta.get("task"), meta.get("seed"), meta.get("sizes")) == (name, seed, {**DEFAULT_SIZES, **sizes}):
            return out
        shutil.rmtree(out)
    make_task(name, out, sizes, seed)
    return out


__all__ = ["TASKS", "ensure_task", "get_task", "make_task", "task_meta"]
