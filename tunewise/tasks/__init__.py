"""Built-in tasks (generators + scorers) and retention probes; `make_task` writes a task directory.

    structured  sentence -> meaning representation (ViGGO shape)      scorer mr
    classify    message -> intent label                                 scorer classify
    sql         schema + question -> SQL on a generated SQLite db        scorer sql (execution accuracy)
    math        word problem -> worked solution ending '#### N'          scorer number
    math-hard   math's training problems, tested on longer chains with larger numbers (out of distribution)
    math-chain  one count through a chain of small steps (longer than math's, in distribution)  scorer number
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_json, atomic_write_text
from tunewise.ownership import mark_dir
from tunewise.tasks import classify, math_chain, math_hard, math_task, sql, structured
from tunewise.tasks.base import (
    DEFAULT_SIZES,
    META_FILE,
    SPLITS,
    TASK_FORMATS,
    TaskSpec,
    dumps_jsonl,
    generate_split,
)
from tunewise.tasks.noise import add_noise, noise_meta

TASKS: dict[str, TaskSpec] = {s.name: s for s in (structured.SPEC, classify.SPEC, sql.SPEC, math_task.SPEC,
                                                 math_hard.SPEC, math_chain.SPEC)}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise TunewiseError(f"unknown task '{name}'", f"built-in tasks: {', '.join(TASKS)}")
    return TASKS[name]


def task_meta(spec: TaskSpec, seed: int, sizes: dict[str, int], extra: dict[str, Any],
              fmt: str = "prompt_completion") -> dict[str, Any]:
    """meta.json: everything `tunewise eval` needs to generate and score this task's files."""
    options = {**spec.scorer_options, **extra}
    meta: dict[str, Any] = {
        "task": spec.name,
        "description": spec.description,
        "format": fmt,
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


def make_task(name: str, out: str | Path, sizes: dict[str, int] | None = None, seed: int = 0,
              fmt: str = "prompt_completion", noise: float = 0.0, spec: TaskSpec | None = None) -> dict[str, Any]:
    """Write train/validation/test JSONL, meta.json (and side files such as db.sqlite) into `out`; `fmt` chat
    writes every example as messages with the task's instruction (for instruct models); `noise` plants that
    share of bad records in the training split (tasks/noise.py), listed in meta.json. `spec`: a task not in the
    registry (e.g. math_chain.chain_spec at another length), written under its own name."""
    spec = spec or get_task(name)
    if fmt not in TASK_FORMATS:
        raise TunewiseError(f"--format: unknown task format '{fmt}'", f"use one of {', '.join(TASK_FORMATS)}")
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
    planted = None
    for split in SPLITS:
        examples = generate_split(spec, split, sizes[split], seed, ctx)
        if split == "train" and noise:
            examples, planted = _noisy(spec, examples, noise, seed, ctx)
        atomic_write_text(out / f"{split}.jsonl", dumps_jsonl([e.record(fmt, spec.instruction) for e in examples]))
    meta = task_meta(spec, seed, sizes, extra, fmt)
    if planted is not None:
        meta["noise"] = noise_meta(noise, planted)
    atomic_write_json(out / META_FILE, meta)
    mark_dir(out, "task", name)  # so a later `tasks make` of another task into this folder is refused
    return meta


def _noisy(spec: TaskSpec, examples: list, share: float, seed: int, ctx: dict) -> tuple[list, list]:
    """The training examples with `share` of them made bad; off-task records come from another task."""
    other = TASKS["classify" if spec.name != "classify" else "structured"]
    off_task = generate_split(other, "train", max(1, len(examples)), seed + 1, ctx)
    return add_noise(examples, share, seed, off_task)


def ensure_task(name: str, out: str | Path, sizes: dict[str, int], seed: int, fmt: str = "prompt_completion") -> Path:
    """`out` holding task `name` at these sizes and seed: kept when it already does (repeated commands train and
    score on the same files), written afresh when it holds another task, other sizes or another seed."""
    out = Path(out)
    meta_path = out / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if (meta.get("task"), meta.get("seed"), meta.get("sizes"), meta.get("format")) == \
                (name, seed, {**DEFAULT_SIZES, **sizes}, fmt):
            return out
        shutil.rmtree(out)
    make_task(name, out, sizes, seed, fmt)
    return out


def format_for_tokenizer(tokenizer) -> str:
    """How built-in tasks are written for a model: as chat messages when its tokenizer has a chat template (an
    instruct model is asked as it was tuned, so its untuned score is fair), as prompt/completion otherwise."""
    return "chat" if getattr(tokenizer, "chat_template", None) else "prompt_completion"


def task_format_for(base: str) -> str:
    from tunewise.models import load_tokenizer

    return format_for_tokenizer(load_tokenizer(base))


__all__ = ["TASKS", "TASK_FORMATS", "ensure_task", "format_for_tokenizer", "get_task", "make_task", "task_format_for", "task_meta"]
