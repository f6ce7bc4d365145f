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
# math-hard (the first pass: 0 for every method, a floor) gives way to math-chain, a reasoning task the base
# does not floor on (issue 40)
HEADLINE_TASKS = ("structured", "classify", "sql", "math", "math-chain")
# Resolution first (issue 40): 3 seeds x EVAL_SIZE test examples pool 3 * EVAL_SIZE paired examples per task, a
# planned band of +-3.6 points from the examples (tunewise.decide.band.planned_half_width), leaving room for the
# seeds' spread inside the +-5 points the claims are decided at
SEEDS = (0, 1, 2)
EVAL_SIZE = 200
CONTINUAL_TASKS = ("structured", "sql", "math")
CAPACITY_SIZES = (60, 240, 480)
CAPACITY_RANKS = (4, 16, 64)
# claim 11 (issue 38): the noisy set of 5N records, `data select --k N` of it, a random N of it; same steps
CURATED_TASKS = ("structured", "sql")  # one representation task and one other
CURATED_N = 120
CURATED_NOISE = 0.3
CURATED_DATA = ("noisy", "selected", "random")
CURATED_SEEDS = SEEDS[:2]  # 400 paired test examples: a planned +-4.4 points, at two thirds of three seeds' 6.6 h
# What a plain run does: claims 1-3 (and 5 and 9, which read the same runs) at +-5 points. The rest is breadth,
# run by `--claims` after it (STUDY.md says which rows wait): cut breadth, not resolution.
FIRST_PASS = (1, 2, 3, 5, 9)
ALL_CLAIMS = tuple(range(1, 12))


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
    eval_size: int = EVAL_SIZE
    retention: bool = True  # the base's default probes (knowledge and kl on smollm2) before and after
    eval_every: int | None = None
    analyze: bool = True
    data: str = "clean"  # claim 11: clean | noisy (5x train_size, CURATED_NOISE bad) | selected | random (of it)
    kind: str = field(default="train", init=False)

    @property
    def label(self) -> str:
        parts = [self.task] + ([] if self.data == "clean" else [self.data])
        parts.append(self.method if self.method == "full" else f"{self.method}-r{self.r}")
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
    eval_size: int = EVAL_SIZE
    kind: str = field(default="base", init=False)

    @property
    def label(self) -> str:
        return f"{self.task}-untuned-s{self.seed}"


@dataclass(frozen=True)
class ContinualRun:
    """`tunewise continual`: the tasks in order, LoRA (merged and restarted per stage) and full fine-tuning."""

    tasks: tuple[str, ...] = CONTINUAL_TASKS
    train_size: int = 240
    eval_size: int = EVAL_SIZE  # every task after every stage (tasks squared), at the size that bands forgetting
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


def plan(loss_of: LossOf | None = None, claims: tuple[int, ...] = ALL_CLAIMS) -> list[tuple[tuple[int, ...], Step]]:
    """(claims answered, step) in execution order, the steps of the claims asked for: the lr sweep first (every
    later run uses its result; given the sweep's losses so far, extended where its best sits on an edge), then
    the headline comparison task by task, every seed of a task before the next (a claim is decided once its
    tasks' seeds finish: a pass cut short leaves whole claims, not every claim at one seed), the single-factor
    variations, the epochs, the sequence, capacity, curated data."""
    steps: list[tuple[tuple[int, ...], Step]] = [((9, 6), Run(SWEEP_TASK, m, lr)) for m in SWEEP_LRS
                                                 for lr in sweep_grid(m, loss_of)]
    steps += _headline() + _variations() + _capacity() + _curated()
    wanted = set(claims) | {9}  # the sweep: every run takes its lr from it
    return _unique([(c, s) for c, s in steps if wanted & set(c)])


def _headline() -> list[tuple[tuple[int, ...], Step]]:
    steps: list[tuple[tuple[int, ...], Step]] = []
    for task in HEADLINE_TASKS:  # claim by claim (their tasks are listed in claim order), every seed of a task
        for seed in SEEDS:
            steps.append(((1, 2, 3), BaseEval(task, seed)))
            lean = {} if seed == 0 else {"retention": False, "analyze": False}
            steps += [((1, 2, 3, 5, 6), Run(task, m, seed=seed, **lean)) for m in ("lora", "full")]
    return steps


def _variations() -> list[tuple[tuple[int, ...], Step]]:
    return [((4,), Run(SWEEP_TASK, "qlora")),
            ((5, 6), Run(SWEEP_TASK, "lora", r=8)), ((5, 6), Run(SWEEP_TASK, "lora", r=64)),
            ((6, 8), Run(SWEEP_TASK, "lora", alpha=32)), ((8,), Run(SWEEP_TASK, "lora", r=32)),
            ((8,), Run(SWEEP_TASK, "lora", epochs=3, eval_every=10)),
            ((8,), Run(SWEEP_TASK, "full", epochs=3, eval_every=10)),
            ((7,), ContinualRun())]


def capacity_run(method: str, n: int, seed: int = 0, r: int = 16, batch_size: int = 8) -> Run:
    """Claim 10's run: at the headline size and batch these are the headline runs (probes and all: reused)."""
    lean = {} if (n, batch_size) == (240, 8) else {"retention": False, "analyze": False}
    return Run(SWEEP_TASK, method, r=r if method != "full" else 16, seed=seed, train_size=n, batch_size=batch_size,
               **lean)


def _capacity() -> list[tuple[tuple[int, ...], Step]]:
    """Every rank at every size once; the two comparisons the verdict reads over every seed, so their bands are
    +-5 points: full - LoRA r4 at the smallest and the largest size, and batch 32 against 8 at the largest."""
    small, big = CAPACITY_SIZES[0], CAPACITY_SIZES[-1]
    steps = [capacity_run(m, n, r=r) for n in CAPACITY_SIZES for m, r in
             [*(("lora", r) for r in CAPACITY_RANKS), ("full", 16)]]
    for seed in SEEDS:
        steps += [capacity_run("lora", n, seed, r=4) for n in (small, big)]
        steps += [capacity_run("full", n, seed) for n in (small, big)]
        steps += [capacity_run(m, big, seed, batch_size=b) for m in ("lora", "full") for b in (8, 32)]
    return [((10,), s) for s in steps]


def curated_run(task: str, method: str, data: str, seed: int = 0) -> Run:
    """Claim 11's run: the same number of steps for every data variant (the noisy 5N once, the N five times)."""
    noisy = data == "noisy"
    return Run(task, method, seed=seed, data=data, train_size=5 * CURATED_N if noisy else CURATED_N,
               epochs=1.0 if noisy else 5.0, retention=False, analyze=False)


def _curated() -> list[tuple[tuple[int, ...], Step]]:
    return [((11,), curated_run(t, m, d, seed)) for seed in CURATED_SEEDS for t in CURATED_TASKS for m in ("lora", "full")
            for d in CURATED_DATA]


def _unique(steps: list[tuple[tuple[int, ...], Step]]) -> list[tuple[tuple[int, ...], Step]]:
    """One entry per distinct step, answering every claim that listed it (the first position wins)."""
    merged: dict[Step, set[int]] = {}
    for claims, step in steps:
        merged.setdefault(step, set()).update(claims)
    return [(tuple(sorted(c)), s) for s, c in merged.items()]
