"""The study's plan before it runs (issue 40): each step with its expected time and, for a comparison, the band its
gap can expect; what the whole plan costs on this CPU, pass by pass.

Times come from the rates of finished steps of the same kind (their wall seconds in the stored results) and fall
back to PRIOR, rates measured once on this machine and cited below, until one has finished. Bands come from
tunewise.decide (`planned_half_width`: the paired band's half width on n examples at the pilot's spread).
"""

from __future__ import annotations

import os
from dataclasses import replace

import study_plan as sizes  # the plan's constants (seeds, sweep, claim 11's N)
from study_exec import NotReady, resolve, run_seconds, sweep_loss_of
from study_plan import FIRST_PASS, BaseEval, ContinualRun, Run, Step, plan
from study_store import finished

from tunewise.decide.band import planned_half_width
from tunewise.decide.margins import RESOLUTION_POINTS

# Seconds per unit before any step of the kind finished here. Training: the first pass's runs on the idle 2-core
# machine (0.8-1.3 s per example). Scoring: RESULTS.md, "Generation engine vs model.generate" (smollm2, 2.0-4.2
# examples/s), measured before the engine computed each task's shared prompt start once: an upper bound now.
# data select on smollm2 (RESULTS.md): 0.13 s per short record idle, 0.6 s per chat record on shared cores.
PRIOR = {"train_per_example": {"lora": 0.9, "qlora": 1.3, "full": 0.8},
         "eval_per_example": {"structured": 0.27, "classify": 0.27, "sql": 0.25, "math": 0.45, "math-chain": 0.4,
                              "math-hard": 0.5},
         "probes": 90.0, "analyze": 60.0, "select_per_record": 0.5}
LATER_PASSES = ((10,), (11,), (4, 6, 7, 8))  # breadth, after the first pass: `--claims 10`, ...


def measured(results: dict[str, dict], phase: str, per, match) -> float | None:
    """Mean seconds per unit of a phase over finished steps that `match` (None when there are none)."""
    from study_exec import phase_seconds

    rates = [phase_seconds(r)[phase] / per(r["step"]) for r in results.values()
             if phase in r["wall_s"] and r["step"].get("kind") in ("train", "base") and match(r["step"])
             and not r.get("rescored_from")]
    return sum(rates) / len(rates) if rates else None


def eval_s(task: str, eval_size: int, results: dict[str, dict]) -> float:
    rate = measured(results, "eval", lambda s: s["eval_size"], lambda s: s["task"] == task)
    return (rate or PRIOR["eval_per_example"].get(task, 0.5)) * eval_size


def estimate_s(step: Step, results: dict[str, dict]) -> float:
    """Expected wall seconds of a step: measured rates of finished steps where there are some, else PRIOR."""
    if isinstance(step, ContinualRun):
        per_stage = sum(estimate_s(Run(t, m, 1e-3, eval_size=step.eval_size), results) for t in step.tasks
                        for m in ("lora", "full"))
        return per_stage + 2 * sum(eval_s(t, step.eval_size, results) for t in step.tasks) * len(step.tasks)
    evaluation = eval_s(step.task, step.eval_size, results)
    if isinstance(step, BaseEval):
        return evaluation
    # the train phase holds the after-training probes too (the base's are cached after the first run)
    per_example = measured(results, "train", lambda s: s["train_size"] * s["epochs"],
                           lambda s: s["method"] == step.method and s["retention"] == step.retention)
    if per_example is None:
        per_example = PRIOR["train_per_example"][step.method] + (
            PRIOR["probes"] / step.train_size if step.retention else 0)
    analyze = measured(results, "analyze", lambda s: 1, lambda s: True) or PRIOR["analyze"]
    # both methods select from the same noisy set and the second reads the first's cached scores: half each
    select = PRIOR["select_per_record"] * 5 * step.train_size / 2 if step.data == "selected" else 0.0
    return per_example * step.train_size * step.epochs + evaluation + (analyze if step.analyze else 0) + select


def expected_band(step: Step, claims: tuple[int, ...]) -> str:
    """The band a comparison this step is part of can expect from its seeds' test examples together (the plan's
    guess; the seeds' own spread adds to it)."""
    if not isinstance(step, Run) or step.method not in ("lora", "full"):
        return ""
    seeds = len(sizes.SEEDS)
    if {1, 2, 3} & set(claims):
        what = "full - LoRA"
    elif 11 in claims:
        what, seeds = f"curated {sizes.CURATED_N} - the others", len(sizes.CURATED_SEEDS)
    elif 10 in claims and step.seed == 0 and step.train_size != 240:
        what = "its comparison at this size" if step.r in (4, 16) else ""
    else:
        return ""
    if not what:
        return ""
    n = step.eval_size * seeds
    half = planned_half_width(n)
    flag = "" if half <= RESOLUTION_POINTS else f" (wider than +-{RESOLUTION_POINTS:g})"
    return (f"; expected band on {what}: +-{half:.1f} points{flag} ({n} paired examples, {seeds} seeds; the seeds' "
            "own spread adds to it)")


def describe(step: Step) -> str:
    if isinstance(step, Run):
        lr = "lr from the sweep" if step.lr == "sweep" else f"lr {step.lr:g}"
        steps = -(-step.train_size // step.batch_size) * step.epochs
        method = step.method if step.method == "full" else f"{step.method} r{step.r}" + (
            f" alpha {step.alpha}" if step.alpha is not None else "")
        data = "" if step.data == "clean" else f" ({step.data} data)"
        return (f"train {method} on {step.task}{data}: {step.train_size} examples x {step.epochs:g} epochs, batch "
                f"{step.batch_size} ({steps:.0f} steps), {lr}, seed {step.seed}, {step.eval_size} test examples")
    if isinstance(step, BaseEval):
        return f"score the untuned base on {step.task} (seed {step.seed}, {step.eval_size} test examples)"
    return (f"continual {' -> '.join(step.tasks)}, LoRA r16 and full, lrs from the sweep, seed {step.seed}, "
            f"{step.eval_size} test examples per task after each stage")


def status(step: Step, results: dict[str, dict]) -> tuple[Step, dict | None, bool]:
    """(the step with its lr resolved where the sweep allows, its finished result or None, whether it can run)."""
    try:
        step = resolve(step, results)
    except NotReady:
        return step, None, False  # waits for the sweep
    return step, finished(step, results), True


def seconds_left(results: dict[str, dict], claims: tuple[int, ...]) -> float:
    left = 0.0
    for _, step in plan(sweep_loss_of(results), claims):
        step, done, ready = status(step, results)
        if done is None and not sweep_twin(step, ready):
            left += estimate_s(step, results)
    return left


def sweep_twin(step: Step, ready: bool) -> bool:
    """A run that, once the sweep picks its lr, is one of the sweep's own runs (reused: no time of its own)."""
    if ready or not isinstance(step, Run) or step.task != sizes.SWEEP_TASK or step.method not in sizes.SWEEP_LRS:
        return False
    lr = sizes.SWEEP_LRS[step.method][0]
    return replace(step, lr=lr) == Run(sizes.SWEEP_TASK, step.method, lr)


def measured_needs(results: dict[str, dict]) -> None:
    """Where finished runs give a measured band on full - LoRA: the band, and what deciding it would take (the
    measured spread, not the plan's guess, says whether more seeds or examples are needed)."""
    from study_claims import Reader, call_of

    from tunewise.decide.vocabulary import kind_of

    for task in sizes.HEADLINE_TASKS:
        call = call_of(Reader(results), task, kind_of(task))
        if call is not None:
            print(f"  measured on {task}: {call.sentence}")


def print_plan(results: dict[str, dict], claims: tuple[int, ...] = FIRST_PASS) -> None:
    left = 0.0
    for i, (answers, step) in enumerate(plan(sweep_loss_of(results), claims), 1):
        step, done, ready = status(step, results)
        head = f"[{i:2d}] claims {','.join(map(str, answers)):<12} {describe(step)}"
        if done is not None:
            print(f"{head}: done ({run_seconds(done):.0f} s)")
            continue
        if sweep_twin(step, ready):
            print(f"{head}: the sweep's run at its best lr (no time of its own){expected_band(step, answers)}")
            continue
        est = estimate_s(step, results)
        left += est
        print(f"{head}: to run (~{est / 60:.0f} min){expected_band(step, answers)}")
    loads = [r["load_before"] for r in results.values()]
    rates = (f"at the rates of the {len(loads)} finished steps (load average {min(loads):.1f}-{max(loads):.1f} "
             "when they started; an idle machine is faster)" if loads else
             "at the prior rates (study_dryrun.PRIOR; no step finished yet)")
    print(f"left to run for claims {','.join(map(str, claims))}: ~{left / 3600:.1f} h on {os.cpu_count()} cores, "
          f"{rates}")
    for later in LATER_PASSES:
        if not set(later) <= set(claims):
            extra = seconds_left(results, tuple(sorted(set(claims) | set(later)))) - left
            print(f"  then --claims {','.join(map(str, later))}: ~{extra / 3600:.1f} h more")
    if claims != sizes.ALL_CLAIMS:
        print(f"  every claim (--claims all): ~{seconds_left(results, sizes.ALL_CLAIMS) / 3600:.1f} h")
    measured_needs(results)
    print("where the base starts on math-chain (claim 3's task), 40 examples a length: "
          "python benchmarks/math_chain_base.py --base smollm2 --steps 3,4,5 --n 40", flush=True)
