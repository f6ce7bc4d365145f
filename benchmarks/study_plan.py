"""The study's runs (issue 15): which trainings answer which of the seed's ten claims, in the order they run.

Pure data: no model is touched here. `study.py` executes the plan and `study_report.py` turns the results into
`benchmarks/STUDY.md`. A run is identified by its settings, so two claims that need the same training share it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

SWEEP_TASK = "structured"
SWEEP_LRS = {"lora": (3e-4, 1e-3, 3e-3), "full": (3e-5, 1e-4, 3e-4)}  # LoRA ~10x full (Schulman et al.)
SWEEP_EXTENSIONS = 2  # values a sweep may add on each side while its best lr sits on the grid's edge
HEADLINE_TASKS = ("structured", "classify", "sql", "math", "math-hard")
SEEDS = (0, 1)
CONTINUAL_TASKS = ("structured", "sql", "math")
CAPACITY_SIZES = (60, 240, 480)
CAPACITY_RANKS = (4, 16, 64)


@dataclass(frozen=True)
class Run:
    """One training, scored on its task's test split, with retention probes and intruder analysis.

    `lr` is a number, or "sweep": the lr with the lowest validation loss in the sweep of this method (QLoRA
    takes LoRA's), so every method is compared at its own tuned learning rate."""

    task: str
    method: str
    lr: float | str = "sweep"
    r: int = 16
    alpha: int | None = None  # None: alpha = r (the seed's first choice)
    seed: int = 0
    train_size: int = 240
    epochs: float = 1.0
    batch_size: int = 8
    eval_size: int = 40
    retention: bool = True  # the base's default probes (knowledge and kl on smollm2) before and after
    eval_every: int | None = None
    analyze: bool = True
    kind: str = field(default="train", init=False)

    @property
    def label(self) -> str:
        parts = [self.task, self.method if self.method == "full" else f"{self.method}-r{self.r}"]
        if self.alpha is not None:
            parts.append(f"a{self.alpha}")
        parts.append(f"lr{self.lr:g}" if isinstance(self.lr, float) else "lr-sweep")
        if (self.train_size, self.epochs, self.batch_size) != (240, 1.0, 8):
            parts.append(f"n{self.train_size}-e{self.epochs:g}-b{self.batch_size}")
        return "-".join(parts) + f"-s{self.seed}"


@dataclass(frozen=True)
class BaseEval:
    """The untuned base on a task's test split (the row every score is read against)."""

    task: str
    seed: int = 0
    eval_size: int = 40
    kind: str = field(default="base", init=False)

    @property
    def label(self) -> str:
        return f"{self.task}-untuned-s{self.seed}"


@dataclass(frozen=True)
class ContinualRun:
    """`tunewise continual`: the tasks in order, LoRA (merged and restarted per stage) and full fine-tuning."""

    tasks: tuple[str, ...] = CONTINUAL_TASKS
    train_size: int = 240
    eval_size: int = 40
    batch_size: int = 8
    epochs: float = 1.0
    seed: int = 0
    lora_lr: float | str = "sweep"  # as in Run: "sweep" = the sweep's best for the method
    full_lr: float | str = "sweep"
    kind: str = field(default="continual", init=False)

    @property
    def label(self) -> str:
        return "continual-" + "-".join(self.tasks) + f"-s{self.seed}"


Step = Run | BaseEval | ContinualRun


def run_id(step: Step) -> str:
    """The folder name of a step: readable label + a digest of every setting (a changed setting = a new run)."""
    digest = hashlib.sha256(json.dumps(asdict(step), sort_keys=True).encode()).hexdigest()[:8]
    return f"{step.label}-{digest}"


LossOf = Callable[[str, float], "float | None"]  # (method, lr) -> the sweep run's final validation loss, if run


def ladder_step(lr: float, up: bool) -> float:
    """The next value of the 1-3-10 ladder above (or below) lr: 3e-3 -> 1e-2 -> 3e-2; 3e-5 -> 1e-5 -> 3e-6."""
    ones = f"{lr:.0e}".startswith("1")
    factor = (3 if ones else 10 / 3) if up else (3 / 10 if ones else 1 / 3)
    return float(f"{lr * factor:.0e}")


def sweep_grid(method: str, loss_of: LossOf | None = None) -> list[float]:
    """The method's learning rates: SWEEP_LRS, extended along the ladder (at most SWEEP_EXTENSIONS values each
    way) while the lowest validation loss sits on the grid's edge, so the pick is a minimum, not a boundary."""
    grid, added = list(SWEEP_LRS[method]), {True: 0, False: 0}
    while loss_of is not None:
        losses = {lr: loss_of(method, lr) for lr in grid}
        if None in losses.values():
            break
        best = min(grid, key=lambda lr: losses[lr])
        up = best == grid[-1]
        if best not in (grid[0], grid[-1]) or added[up] == SWEEP_EXTENSIONS:
            break
        added[up] += 1
        grid = grid + [ladder_step(grid[-1], True)] if up else [ladder_step(grid[0], False)] + grid
    return grid


def plan(loss_of: LossOf | None = None) -> list[tuple[tuple[int, ...], Step]]:
    """(claims answered, step) in execution order: the lr sweep first (every later run uses its result; given
    the sweep's losses so far, extended where its best sits on an edge), then the headline comparison at seed 0,
    the single-factor variations, the second seed (so claims 1-3 stop being provisional early), the epochs, the
    sequence, capacity."""
    steps: list[tuple[tuple[int, ...], Step]] = [((9, 6), Run(SWEEP_TASK, m, lr)) for m in SWEEP_LRS
                                                 for lr in sweep_grid(m, loss_of)]
    for seed in SEEDS:
        for task in HEADLINE_TASKS:
            steps.append(((1, 2, 3), BaseEval(task, seed)))
            lean = {} if seed == 0 else {"retention": False, "analyze": False}
            steps += [((1, 2, 3, 5, 6), Run(task, m, seed=seed, **lean)) for m in ("lora", "full")]
        if seed == 0:
            steps += [((4,), Run(SWEEP_TASK, "qlora")),
                      ((5, 6), Run(SWEEP_TASK, "lora", r=8)), ((5, 6), Run(SWEEP_TASK, "lora", r=64)),
                      ((6, 8), Run(SWEEP_TASK, "lora", alpha=32)), ((8,), Run(SWEEP_TASK, "lora", r=32))]
    steps += [((8,), Run(SWEEP_TASK, "lora", epochs=3, eval_every=10)),
              ((8,), Run(SWEEP_TASK, "full", epochs=3, eval_every=10)),
              ((7,), ContinualRun())]
    for n in CAPACITY_SIZES:  # at the headline size these are the headline runs (probes and all): reused
        lean = {} if n == 240 else {"retention": False, "analyze": False}
        steps += [((10,), Run(SWEEP_TASK, "lora", r=r, train_size=n, **lean)) for r in CAPACITY_RANKS]
        steps.append(((10,), Run(SWEEP_TASK, "full", train_size=n, **lean)))
    steps += [((10,), Run(SWEEP_TASK, m, train_size=CAPACITY_SIZES[-1], batch_size=32, retention=False, analyze=False))
              for m in ("lora", "full")]
    return _unique(steps)


def _unique(steps: list[tuple[tuple[int, ...], Step]]) -> list[tuple[tuple[int, ...], Step]]:
    """One entry per distinct step, answering every claim that listed it (the first position wins)."""
    merged: dict[Step, set[int]] = {}
    for claims, step in steps:
        merged.setdefault(step, set()).update(claims)
    return [(tuple(sorted(c)), s) for s, c in merged.items()]
