"""`tunewise continual`: tasks in sequence, watching forgetting build up (Shuttleworth et al., section 1).

For each method: train on task 1, evaluate on every task, then train on task 2 starting from the result -- a LoRA
adapter is merged into the base and a fresh adapter started, as in the paper -- and so on. Every stage lives in
OUT/<method>/stage-<i>-<task>/ and is skipped when it finished before from the same model, settings and data
(resumable per stage).

matplotlib is imported only when the forgetting plot is drawn.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pydantic import Field

from tunewise.analysis.pipeline import analyze
from tunewise.config import dump_config
from tunewise.data.seq_len import task_seq_len as fitted
from tunewise.decide import Scores, item_pair, measure_gap
from tunewise.defaults import TINY_BASE, MethodName, default_lr
from tunewise.errors import TunewiseError
from tunewise.evaluate.retention import run_probes
from tunewise.evaluate.runner import evaluate, load_target, resolve_data
from tunewise.fileio import atomic_save_figure, atomic_write_json
from tunewise.inputs import Strict, load_file
from tunewise.merge import merge_adapter
from tunewise.model_size import parameter_count
from tunewise.models import load_base
from tunewise.rundir import RunDir
from tunewise.stage import Stage, StageSpec, stage_key
from tunewise.tasks import TASKS, ensure_task, task_format_for
from tunewise.tasks.probes import default_probes
from tunewise.train import train


class MethodSpec(Strict):
    method: MethodName = Field(description="lora, qlora or full.")
    r: int = Field(16, gt=0, description="Adapter rank (LoRA and QLoRA).")
    lr: float | None = Field(None, gt=0, description="Learning rate; default by method and model size "
                                                     "(tunewise/defaults.py).")

    @property
    def label(self) -> str:
        return self.method if self.method == "full" else f"{self.method}-r{self.r}"


class ContinualConfig(Strict):
    base: str = Field(TINY_BASE, description="Base model of stage 1: 'tiny', a folder or a hub id.")
    tasks: list[str] = Field(min_length=2, description="Built-in task names or task folders, in training order.")
    methods: list[MethodSpec] = Field(min_length=1, description="Each method runs the whole sequence, e.g. "
                                      "[{method: lora, r: 16}, {method: full}].")
    epochs: float = Field(2, gt=0, description="Passes over each task's training data.")
    batch_size: int = Field(16, gt=0, description="Examples per optimizer step.")
    train_size: int = Field(300, gt=0, description="Training examples generated per built-in task.")
    eval_size: int = Field(100, gt=0, description="Test examples per built-in task (scored after every stage).")
    max_seq_len: int | None = Field(None, gt=7, description="Longest example in tokens; default: each task's "
                                                           "longest tokenized example, up to the model's context.")
    allow_truncation: bool = Field(False, description="Train even when more than 5% of a task's examples would "
                                                      "be cut to max_seq_len.")
    probes: list[str] | None = Field(None, description="Retention probes; default lm on the tiny base, "
                                                          "knowledge, follows and kl on any other model.")
    seed: int = Field(0, description="Seed of the generated tasks and of training.")
    out: str = Field("runs/continual", description="Output folder; finished stages are reused.")

    @property
    def probe_names(self) -> list[str]:
        """The probes given, else `lm` on the tiny base (its finest-grained one) and default_probes elsewhere (knowledge, follows, kl)."""
        if self.probes is not None:
            return self.probes
        return ["lm"] if self.base == TINY_BASE else default_probes(self.base)


def load_continual_config(path: str | Path) -> ContinualConfig:
    return load_file(ContinualConfig, path)


def task_dir(cfg: ContinualConfig, task: str, out: Path) -> Path:
    if Path(task).is_dir():
        return Path(task)
    sizes = {"train": cfg.train_size, "validation": 16, "test": cfg.eval_size}
    return ensure_task(task, out / "data" / task, sizes, cfg.seed, task_format_for(cfg.base))


def task_seq_len(cfg: ContinualConfig, data: Path, log=print) -> int:
    """max_seq_len, else the task's longest tokenized example up to the model's context (data/seq_len.py)."""
    return fitted(cfg.base, data, cfg.max_seq_len, cfg.allow_truncation, log)


def stage_spec(cfg: ContinualConfig, m: MethodSpec, base: str, data: Path, n_params: int,
               seq_len: int = 160) -> StageSpec:
    """What one method's stage on one task trains: from `base` (the previous stage's model), at the size
    default lr of the original base unless the method gives one."""
    return StageSpec(base, m.method, data / "train.jsonl", rank=m.r, max_seq_len=seq_len, batch_size=cfg.batch_size,
                     seed=cfg.seed, lr=m.lr or default_lr(m.method, n_params)[0], epochs=cfg.epochs)


def run_stage(cfg: ContinualConfig, m: MethodSpec, i: int, task: str, base: str, data: Path, tasks: dict[str, Path],
              out: Path, n_params: int, quiet: bool, seq_len: int = 160) -> dict:
    """Train one stage from `base` (tunewise.stage: reused when it finished from the same model files, settings
    and data), make the result a plain model folder, evaluate it on every task."""
    folder = out / m.label / f"stage-{i + 1}-{Path(task).name}"
    run_cfg = stage_spec(cfg, m, base, data, n_params, seq_len).run_config()
    files = [data / "train.jsonl", *(d / "test.jsonl" for d in tasks.values())]  # it keeps scores on every task
    stage = Stage(folder, folder / "run", folder / "stage.json", stage_key(base, dump_config(run_cfg), files))
    model_dir = folder / ("run/model" if m.method == "full" else "merged")

    def finish() -> dict:
        if m.method != "full":
            shutil.rmtree(model_dir, ignore_errors=True)  # a merge cut short before
            merge_adapter(folder / "run", model_dir, base=base, dtype="fp32")  # the next stage trains from it
        scored = {name: _score(model_dir, d) for name, d in tasks.items()}
        return {"stage": i + 1, "task": task, "model": str(model_dir),
                "scores": {name: score for name, (score, _) in scored.items()},
                "items": {name: items for name, (_, items) in scored.items()},  # per example: the bands' input
                "train_loss": RunDir(folder / "run").summary()["final_train_loss"],
                "intruders": _intruders(cfg.base, model_dir), "probes": _probes(model_dir, cfg.probe_names, cfg.base)}

    return stage.run(lambda resume: train(run_cfg, folder / "run", resume=resume, quiet=quiet), finish)


def _score(model_dir: Path, data: Path) -> tuple[float, list[tuple[float, float]]]:
    """The test score and each example's (numerator, denominator) of the metric."""
    spec = resolve_data(data=str(data), split="test")
    result = evaluate(load_target(str(model_dir)), spec)
    return float(result.summary()["score"] or 0.0), [item_pair(r, result.primary) for r in result.predictions]


def _intruders(base: str, model_dir: Path) -> int:
    """Intruders of the cumulative update (this stage's model against the original base)."""
    return analyze(base, str(model_dir), k=10, eps=(0.5,), spectrum=False).total[0.5]


def _probes(model_dir: Path, probes: list[str], base: str) -> dict:
    if not probes:
        return {}
    model, tok = load_base(str(model_dir))
    return {name: r["score"] for name, r in run_probes(model, tok, probes, 48, base=base).items()}


def forgetting_bands(stages: list[dict], tasks: list[str]) -> dict[str, dict] | None:
    """Each earlier task's drop (best earlier score - final score) with its band, paired on the task's own test
    examples (tunewise.decide); None when a stage recorded no per-example scores (finished by an older tunewise)."""
    if len(stages) < 2 or any("items" not in s for s in stages):
        return None
    out = {}
    final = stages[-1]
    for j, task in enumerate(tasks[:-1]):
        best = max(stages[j:-1], key=lambda s: s["scores"][task])
        band = measure_gap(Scores.from_pairs(final["items"][task]), Scores.from_pairs(best["items"][task]))
        gap, low, high = band.points()
        out[task] = {"drop_points": round(gap, 2), "band_points": [round(low, 2), round(high, 2)],
                     "examples": band.examples, "best_stage": best["stage"],
                     "decided": low > 0 or high < 0}
    return out


def forgetting(matrix: list[list[float]]) -> float:
    """Average forgetting (Chaudhry et al.): for each task but the last, best earlier score minus final score."""
    n = len(matrix)
    if n < 2:
        return 0.0
    drops = [max(matrix[i][j] for i in range(j, n - 1)) - matrix[n - 1][j] for j in range(n - 1)]
    return sum(drops) / len(drops)


def run_continual(cfg: ContinualConfig, quiet: bool = False, log=print) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = {Path(t).name: task_dir(cfg, t, out) for t in cfg.tasks}
    n_params = parameter_count(cfg.base)
    seq_lens = {name: task_seq_len(cfg, data, log) for name, data in tasks.items()}
    results = {}
    for m in cfg.methods:
        base, stages = cfg.base, []
        for i, (name, data) in enumerate(tasks.items()):
            log(f"{m.label}: stage {i + 1}/{len(tasks)} ({name})")
            t0 = time.time()
            stage = run_stage(cfg, m, i, name, base, data, tasks, out, n_params, quiet, seq_lens[name])
            log(f"{m.label}: stage {i + 1} {'reused' if stage.get('reused') else 'trained and scored'} "
                f"({time.time() - t0:.0f}s)")
            stages.append(stage)
            base = stage["model"]
        matrix = [[s["scores"][t] for t in tasks] for s in stages]
        results[m.label] = {"matrix": matrix, "forgetting": forgetting(matrix),
                            "forgetting_bands": forgetting_bands(stages, list(tasks)),
                            "intruders": [s["intruders"] for s in stages],
                            "probes": [s["probes"] for s in stages]}
    summary = {"tasks": list(tasks), "methods": results, "config": cfg.model_dump()}
    atomic_write_json(out / "continual.json", summary)
    plot_continual(summary, out / "continual.png")
    return summary


def plot_continual(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = summary["tasks"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, r in summary["methods"].items():
        first = [row[0] for row in r["matrix"]]  # how the first task fares as later tasks are learned
        axes[0].plot(range(1, len(first) + 1), first, "o-", label=label)
        axes[1].plot(range(1, len(r["intruders"]) + 1), r["intruders"], "o-", label=label)
    axes[0].set_title(f"score on '{tasks[0]}' after each stage")
    axes[1].set_title("intruder dimensions (cumulative update)")
    for ax in axes:
        ax.set_xlabel("stage")
        ax.legend(fontsize=8)
    return atomic_save_figure(fig, path)


def check_tasks(cfg: ContinualConfig) -> None:
    bad = [t for t in cfg.tasks if t not in TASKS and not Path(t).is_dir()]
    if bad:
        raise TunewiseError(f"unknown tasks {bad}", f"use built-in tasks ({', '.join(TASKS)}) or task folders")
