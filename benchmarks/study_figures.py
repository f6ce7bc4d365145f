"""The study's figures (PNG beside STUDY.md): each banded claim's gaps with their bands (drawn by the report's own
gap figure), the lr sweep, learn vs forget, sequential fine-tuning, loss curves over 3 epochs, capacity.

A figure whose runs are not finished is not drawn (and not listed); the same results draw the same bytes.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from study_claims import (
    REASONING,
    Reader,
    call_of,
    capacity_calls,
    capacity_scores,
    curated_calls,
    learn_forget_rows,
)
from study_exec import sweep_loss_of
from study_plan import CAPACITY_SIZES, SEEDS, SWEEP_LRS, SWEEP_TASK, ContinualRun, Run, sweep_grid

from tunewise.fileio import atomic_save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "tunewise"  # fixed ids: same data, same bytes
    return plt


def sweep_figure(r: Reader, path: Path) -> bool:
    grids = {m: sweep_grid(m, sweep_loss_of(r.results)) for m in SWEEP_LRS}
    points = {m: [(lr, res["summary"]["final_eval_loss"]) for lr in lrs
                  if (res := r.result_of(Run(SWEEP_TASK, m, lr))) is not None] for m, lrs in grids.items()}
    if not any(points.values()):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, pts in points.items():
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=method)
    ax.set(xscale="log", xlabel="learning rate", ylabel="final validation loss", title=f"lr sweep ({SWEEP_TASK})")
    ax.legend()
    atomic_save_figure(fig, path)
    return True


def learn_forget_figure(r: Reader, path: Path) -> bool:
    rows = [row for row in learn_forget_rows(r) if row[4] is not None]
    if not rows:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    markers = {"lora r8": "v", "lora r16": "o", "lora r64": "^", "full": "s"}
    for task, label, score, kept, kl, follows in rows:
        color = f"C{sorted({t for t, *_ in rows}).index(task)}"
        axes[0].scatter(kl, score, marker=markers[label], color=color, label=f"{task} {label}")
        for ax, x in ((axes[1], kept), (axes[2], follows)):
            if x is not None:
                ax.scatter(x, score, marker=markers[label], color=color)
    axes[0].set(xlabel="kl to the base (nats/token, lower = forgot less)", ylabel="task score")
    axes[1].set(xlabel="knowledge kept (log-likelihood; share of the base's)", ylabel="task score")
    axes[2].set(xlabel="follows kept (plain greedy answers; share of the base's)", ylabel="task score")
    axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle("learns less, forgets less? (marker: method, colour: task)")
    atomic_save_figure(fig, path)
    return True


def continual_figure(r: Reader, path: Path) -> bool:
    """One panel per method: each task's score after each stage (a line that falls after its own stage is
    forgetting), and the intruders of the accumulated update per stage."""
    res = r.result_of(ContinualRun())
    if res is None:
        return False
    c = res["continual"]
    plt = _plt()
    fig, axes = plt.subplots(1, len(c["methods"]) + 1, figsize=(4 * (len(c["methods"]) + 1), 3.5))
    stages = range(1, len(c["tasks"]) + 1)
    for ax, (method, v) in zip(axes, c["methods"].items(), strict=False):
        for j, task in enumerate(c["tasks"]):
            ax.plot(stages, [row[j] for row in v["matrix"]], marker="o", color=f"C{j}", label=task)
        ax.set(xticks=list(stages), xticklabels=c["tasks"], xlabel="after training on", ylabel="score",
               ylim=(-0.05, 1.05), title=method)
        ax.legend(fontsize=7)
    for i, (method, v) in enumerate(c["methods"].items()):
        axes[-1].plot(stages, v["intruders"], marker="o", color=f"C{i}", label=method)
    top = max(max(v["intruders"]) for v in c["methods"].values())
    axes[-1].set(xticks=list(stages), xticklabels=c["tasks"], xlabel="after training on", ylim=(-0.5, max(top, 4) + 0.5),
                 ylabel="intruders (eps 0.5)", title="intruder dimensions")
    axes[-1].yaxis.get_major_locator().set_params(integer=True)
    axes[-1].legend(fontsize=7)
    fig.suptitle("sequential fine-tuning: " + " -> ".join(c["tasks"]))
    atomic_save_figure(fig, path)
    return True


def loss_curve_figure(r: Reader, path: Path) -> bool:
    runs = {m: r.result_of(Run(SWEEP_TASK, m, epochs=3, eval_every=10)) for m in ("lora", "full")}
    if not any(runs.values()):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (method, res) in enumerate(runs.items()):
        if res is None:
            continue
        steps, losses = zip(*res["train_losses"], strict=True)
        smooth = [statistics.mean(losses[max(0, j - 9):j + 1]) for j in range(len(losses))]
        ax.plot(steps, smooth, color=f"C{i}", label=f"{method} train (10-step mean)")
        ev = res["summary"]["eval_losses"] or []
        if ev:
            ax.plot(*zip(*ev, strict=True), color=f"C{i}", linestyle="--", marker="o", label=f"{method} eval")
    ax.axhline(0.2, color="grey", linewidth=0.8, label="0.2 (the seed's overfitting mark)")
    ax.set(yscale="log", xlabel="step (30 per epoch)", ylabel="loss", title=f"3 epochs on {SWEEP_TASK}")
    ax.legend(fontsize=7)
    atomic_save_figure(fig, path)
    return True


def capacity_figure(r: Reader, path: Path) -> bool:
    caps = capacity_scores(r)
    if not any(v is not None for row in caps.values() for v in row.values()):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, row in caps.items():
        pts = [(n, v) for n, v in row.items() if v is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=method)
    ax.set(xscale="log", xticks=list(CAPACITY_SIZES), xlabel="training examples (1 epoch, batch 8)",
           ylabel="slot F1", title="capacity")
    ax.set_xticklabels([str(n) for n in CAPACITY_SIZES])
    ax.minorticks_off()  # the log axis' minor labels (2x10^2 ...) would overprint the sizes
    ax.legend(fontsize=8)
    atomic_save_figure(fig, path)
    return True


def task_gap_rows(r: Reader, tasks: tuple[str, ...], kind: str) -> dict[str, dict]:
    """full - LoRA per task, with its band, for the tasks whose runs recorded per-example scores."""
    return {t: c.as_dict() for t in tasks if (c := call_of(r, t, kind)) is not None}


def gap_figure(rows: dict[str, dict], path: Path, xlabel: str, title: str) -> bool:
    """One claim's gaps with their bands (tunewise's report figure, a row each); not drawn without rows."""
    if not rows:
        return False
    from tunewise.decide.margins import TIE_POINTS
    from tunewise.report.plots import gap_bands

    gap_bands(rows, TIE_POINTS, path, xlabel, title)
    return True


def claim_gap_figures() -> dict:
    """claimN_gaps.png for each claim decided by a band."""
    seeds = f"{len(SEEDS)} seeds, each its own test set"
    return {
        "claim1_gaps.png": lambda r, p: gap_figure(task_gap_rows(r, ("structured", "classify"), "representation"), p,
                                                   f"full - LoRA, points ({seeds})", "claim 1: representation tasks"),
        "claim2_gaps.png": lambda r, p: gap_figure(task_gap_rows(r, ("sql",), "sql"), p,
                                                   f"full - LoRA, points ({seeds})", "claim 2: SQL"),
        "claim3_gaps.png": lambda r, p: gap_figure(task_gap_rows(r, REASONING, "reasoning"), p,
                                                   f"full - LoRA, points ({seeds})", "claim 3: reasoning"),
        "claim10_gaps.png": lambda r, p: gap_figure({k: c.as_dict() for k, c in (capacity_calls(r) or {}).items()},
                                                    p, f"points ({seeds})", "claim 10: capacity and batch size"),
        "claim11_gaps.png": lambda r, p: gap_figure(
            {f"{t} {m}: curated - {a}": c.as_dict() for (t, m, a), c in curated_calls(r).items()}, p,
            f"curated N - the other set, points ({seeds})", "claim 11: curated data, per task and method"),
    }


FIGURES = {**claim_gap_figures(), "sweep.png": sweep_figure, "learn_forget.png": learn_forget_figure, "continual.png": continual_figure,
           "loss_curves.png": loss_curve_figure, "capacity.png": capacity_figure}


def draw_figures(r: Reader, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    drawn = []
    for name, draw in FIGURES.items():
        if draw(r, folder / name):
            drawn.append(name)
        elif (folder / name).exists():
            (folder / name).unlink()  # its runs are gone: a stale figure would contradict the tables
    return drawn
