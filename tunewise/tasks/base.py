"""What every built-in task is: a seeded example generator, its scorer, and how to write it to disk.

A task directory (`tunewise tasks make NAME --out DIR`) holds train.jsonl, validation.jsonl, test.jsonl in the
trainer's {"prompt", "completion"} format and meta.json, which tells `tunewise eval` how to generate (stop strings,
max_new_tokens) and how to score (the scorer and its options, e.g. the SQLite file of the `sql` task).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test")
META_FILE = "meta.json"
# Each split draws from its own stream so that changing --train never changes the test set.
SPLIT_SEED_OFFSET = {"train": 0, "validation": 100_003, "test": 200_003}
DEFAULT_SIZES = {"train": 1000, "validation": 100, "test": 200}


@dataclass(frozen=True)
class TaskExample:
    prompt: str
    completion: str
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the `choices` of a classification example

    def record(self, fmt: str = "prompt_completion", instruction: str = "") -> dict[str, Any]:
        """The trainer's record: prompt/completion (a continuation, for base models), or `chat`: the
        task's instruction and the prompt as the user turn, the completion as the assistant's answer (for
        instruct models, which follow an instruction but would not continue 'Meaning:' the same way)."""
        if fmt == "chat":
            user = f"{instruction}\n\n{self.prompt}" if instruction else self.prompt
            return {"messages": [{"role": "user", "content": user},
                                 {"role": "assistant", "content": self.completion.strip()}], **self.extra}
        return {"prompt": self.prompt, "completion": self.completion, **self.extra}


TASK_FORMATS = ("prompt_completion", "chat")
MakeExamples = Callable[[random.Random, int, dict[str, Any]], list[TaskExample]]  # (rng, n, ctx) -> n examples


@dataclass(frozen=True)
class TaskSpec:
    """A built-in task. `make_examples(rng, n, ctx)` draws n examples; `prepare(out, seed)` builds side files."""

    name: str
    description: str
    scorer: str
    stop: list[str]
    max_new_tokens: int
    make_examples: MakeExamples
    prepare: Callable[[Path, int], dict[str, Any]] | None = None  # returns extra meta (e.g. {"db": "db.sqlite"})
    scorer_options: dict[str, Any] = field(default_factory=dict)
    kind: str = "generation"  # what the task measures, for `tasks list` (generation | classification)
    instruction: str = ""  # what the user turn asks for when the task is written as chat messages


def independent(example: Callable[[random.Random], TaskExample]) -> MakeExamples:
    """`make_examples` for a task whose examples need nothing but the random stream."""
    return lambda rng, n, ctx: [example(rng) for _ in range(n)]


def split_seed(seed: int, split: str) -> int:
    return seed * 1_000_003 + SPLIT_SEED_OFFSET[split]


def dumps_jsonl(records: list[dict[str, Any]]) -> str:
    # Records are built in a fixed key order, so the same examples always give the same bytes.
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def generate_split(spec: TaskSpec, split: str, n: int, seed: int, ctx: dict[str, Any]) -> list[TaskExample]:
    return spec.make_examples(random.Random(split_seed(seed, split)), n, {**ctx, "split": split})


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """meta.json of a task directory, or of the directory holding a JSONL file; None when there is none."""
    p = Path(path)
    meta = p / META_FILE if p.is_dir() else p.parent / META_FILE
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        from tunewise.errors import TunewiseError

        raise TunewiseError(f"{meta}: line {e.lineno}: not valid JSON ({e.msg})",
                            "rewrite it with `tunewise tasks make` or fix the JSON") from e
