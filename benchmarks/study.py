"""The seed's ten claims measured on a real base (issue 15): runs the plan, reuses finished runs, writes STUDY.md.

    python benchmarks/study.py --base smollm2 --dry-run     # the plan: runs, budgets, estimated time
    python benchmarks/study.py --base smollm2               # run what is missing, then write benchmarks/STUDY.md
    python benchmarks/study.py --base smollm2 --minutes 90  # start no new run after 90 minutes (resume later)
    python benchmarks/study.py --base smollm2 --report      # only rewrite STUDY.md from the finished runs
    python benchmarks/study.py --base smollm2 --scorer my_metric:score  # your metric in every eval it runs

With --scorer (a built-in name or your own MODULE:FUNCTION, as `tunewise eval --scorer` takes it) every eval of
the study scores with it instead of each task's own scorer (the continual runs keep their tasks' scorers:
`tunewise continual` takes no scorer). A study folder holds one scorer's results: the default --out is then
runs/study-<base>-<scorer>, and STUDY.md is written there, not over benchmarks/STUDY.md.

Every run lives in runs/study-<base>/runs/<id>/ with its result.json; a finished run is never trained again, so
the study can be completed across sessions and, once complete, re-running it reproduces STUDY.md byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_exec import NotReady, execute, phase_seconds, resolve, run_seconds, sweep_loss_of  # noqa: E402
from study_plan import BaseEval, ContinualRun, Run, Step, plan, run_id  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Seconds per unit on the idle 2-core machine, used until finished runs of the same kind give measured ones.
GUESS = {"train_per_example": {"lora": 0.9, "qlora": 1.3, "full": 0.8}, "eval_per_example": 1.5,
         "probes": 90.0, "analyze": 60.0}


def load_results(out: Path) -> dict[str, dict]:
    results = {}
    for path in sorted((out / "runs").glob("*/result.json")):
        res = json.loads(path.read_text())
        results[res["id"]] = res
    return results


def finished(step: Step, results: dict[str, dict]) -> dict | None:
    res = results.get(run_id(step))
    # compared as result.json stores it: a tuple field (the continual's tasks) comes back from JSON as a list
    return res if res is not None and res["step"] == json.loads(json.dumps(asdict(step))) else None


def measured(results: dict[str, dict], phase: str, per, match) -> float | None:
    """Mean seconds per unit of a phase over finished runs that `match` (None when there are none)."""
    rates = [phase_seconds(r)[phase] / per(r["step"]) for r in results.values()
             if r["step"].get("kind") == "train" and phase in r["wall_s"] and match(r["step"])]
    return sum(rates) / len(rates) if rates else None


def estimate_s(step: Step, results: dict[str, dict]) -> float:
    """Expected wall seconds of a step: measured rates of finished runs where there are some, else GUESS."""
    if isinstance(step, ContinualRun):
        per_stage = sum(estimate_s(Run(t, m, 1e-3), results) for t in step.tasks for m in ("lora", "full"))
        return per_stage + 2 * len(step.tasks) ** 2 * GUESS["eval_per_example"] * step.eval_size
    per_eval = measured(results, "eval", lambda s: s["eval_size"], lambda s: s["task"] == step.task)
    evaluation = (per_eval or GUESS["eval_per_example"]) * step.eval_size
    if isinstance(step, BaseEval):
        return evaluation
    # the train phase holds the after-training probes too (the base's are cached after the first run)
    per_example = measured(results, "train", lambda s: s["train_size"] * s["epochs"],
                           lambda s: s["method"] == step.method and s["retention"] == step.retention)
    if per_example is None:
        per_example = GUESS["train_per_example"][step.method] + (
            GUESS["probes"] / step.train_size if step.retention else 0)
    analyze = measured(results, "analyze", lambda s: 1, lambda s: True) or GUESS["analyze"]
    return per_example * step.train_size * step.epochs + evaluation + (analyze if step.analyze else 0)


def describe(step: Step) -> str:
    if isinstance(step, Run):
        lr = "lr from the sweep" if step.lr == "sweep" else f"lr {step.lr:g}"
        steps = -(-step.train_size // step.batch_size) * step.epochs
        method = step.method if step.method == "full" else f"{step.method} r{step.r}" + (
            f" alpha {step.alpha}" if step.alpha is not None else "")
        return (f"train {method} on {step.task}: {step.train_size} examples x {step.epochs:g} epochs, batch "
                f"{step.batch_size} ({steps:.0f} steps), {lr}, seed {step.seed}")
    if isinstance(step, BaseEval):
        return f"score the untuned base on {step.task} (seed {step.seed}, {step.eval_size} test examples)"
    return f"continual {' -> '.join(step.tasks)}, LoRA r16 and full, lrs from the sweep, seed {step.seed}"


def status(step: Step, results: dict[str, dict]) -> tuple[Step, dict | None, bool]:
    """(the step with its lr resolved where the sweep allows, its finished result or None, whether it can run)."""
    try:
        step = resolve(step, results)
    except NotReady:
        return step, None, False  # waits for the sweep
    return step, finished(step, results), True


def next_step(results: dict[str, dict]) -> Step | None:
    """The first unfinished step that can run, in plan order (the plan grows while the sweep extends itself)."""
    for _, step in plan(sweep_loss_of(results)):
        step, done, ready = status(step, results)
        if ready and done is None:
            return step
    return None


def expected_band(step: Step, claims: tuple[int, ...]) -> str:
    """For a run of claims 1-3's comparisons: the band its full - LoRA gap can expect, pooled over the seeds."""
    from study_plan import SEEDS

    from tunewise.decide.band import planned_half_width

    if not isinstance(step, Run) or not {1, 2, 3} & set(claims) or step.method not in ("lora", "full"):
        return ""
    n = step.eval_size * len(SEEDS)
    return f"; expected band on full - LoRA: +-{planned_half_width(n):.1f} points ({n} paired examples)"


def print_plan(results: dict[str, dict]) -> None:
    left = 0.0
    for i, (claims, step) in enumerate(plan(sweep_loss_of(results)), 1):
        step, done, _ = status(step, results)
        head = f"[{i:2d}] claims {','.join(map(str, claims)):<12} {describe(step)}"
        if done is not None:
            print(f"{head}: done ({run_seconds(done):.0f} s)")
            continue
        est = estimate_s(step, results)
        left += est
        print(f"{head}: to run (~{est / 60:.0f} min){expected_band(step, claims)}")
    loads = [r["load_before"] for r in results.values()]
    rates = (f"at the rates of the {len(loads)} finished runs (load average {min(loads):.1f}-{max(loads):.1f} "
             "when they started; an idle machine is faster)" if loads else "at guessed rates (no run finished yet)")
    print(f"left to run: ~{left / 3600:.1f} h on {os.cpu_count()} cores, {rates}", flush=True)


def run_plan(base: str, out: Path, minutes: float | None, scorer: str | None = None) -> dict[str, dict]:
    """Run the missing steps one by one (finished ones are never run again); stop starting new ones after
    `minutes`. `scorer` scores every eval (None: each task's own)."""
    from tunewise.fileio import atomic_write_json

    results, t0 = load_results(out), time.time()
    while (step := next_step(results)) is not None and not (minutes and time.time() - t0 > 60 * minutes):
        print(f"running: {describe(step)} (~{estimate_s(step, results) / 60:.0f} min) ...", flush=True)
        res = execute(step, base, out, out.resolve().parents[1], scorer)
        atomic_write_json(out / "runs" / res["id"] / "result.json", res)
        results[res["id"]] = res
        print(f"     took {run_seconds(res):.0f} s (load {res['load_before']} -> {res['load_after']})",
              flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="smollm2")
    p.add_argument("--out", type=Path, default=None, help="default: runs/study-BASE")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the estimated time; run nothing")
    p.add_argument("--minutes", type=float, default=None, help="start no new run after this many minutes")
    p.add_argument("--report", action="store_true", help="only write STUDY.md from the finished runs")
    p.add_argument("--scorer", default=None, help="score every eval with this (a built-in scorer or your own "
                   "MODULE:FUNCTION) instead of each task's own")
    a = p.parse_args()
    out = a.out or ROOT / "runs" / (f"study-{a.base}" + (f"-{slug(a.scorer)}" if a.scorer else ""))
    check_study_scorer(p, out, a.scorer)
    results = load_results(out) if a.report or a.dry_run else run_plan(a.base, out, a.minutes, a.scorer)
    print_plan(results)
    if not a.dry_run:
        from study_report import write_study

        print(f"wrote {write_study(a.base, results, ROOT, out, a.scorer)}")


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def check_study_scorer(p: argparse.ArgumentParser, out: Path, scorer: str | None) -> None:
    """Refuse, before any run, a scorer that cannot be loaded, or a study folder scored with another one (its
    finished runs would be reused with scores of a different metric)."""
    from tunewise.errors import TunewiseError
    from tunewise.tasks.scorers import check_scorer

    if scorer:
        try:
            check_scorer(scorer)
        except TunewiseError as e:
            p.error(f"--scorer {scorer}: {e}")
    other = sorted({str(r.get("scorer")) for r in load_results(out).values()} - {str(scorer)})
    if other:
        wanted = scorer or "each task's own"
        p.error(f"{out} holds runs scored with {', '.join(other)} ('None' = each task's own scorer), not with "
                f"{wanted}: give --out a folder of its own for this scorer")


if __name__ == "__main__":
    main()
