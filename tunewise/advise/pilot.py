"""`tunewise pilot`: measure instead of reciting. Short LoRA / full (/ QLoRA) trainings on growing slices of
the user's data, scored on the validation split with the task's scorer; a learning curve per method
(curves.py) predicts the score at the full data; the verdict (pilot_verdict.py) weighs that against the rule
table and the memory fit. Everything stays inside the time budget.

Writes OUT/pilot.json, OUT/pilot.html (learning curves with the extrapolation), OUT/pilot_curves.png,
OUT/find_lr/<method>.{json,png} and OUT/recommended.yaml (a run config for the winner, with the measured lr).
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunewise.advise.resolution import PairedGap, paired_gap
from tunewise.decide import item_pair
from tunewise.decide.vocabulary import KINDS, advise_task_of
from tunewise.defaults import METHODS
from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_json, atomic_write_text
from tunewise.stage import StageSpec

GROWTH = (1.5, 4.0)  # each slice is 1.5x to 4x the previous one, as the budget allows
FIND_LR_SHARE = 0.3  # at most this share of the budget goes to the range tests (all methods together)


@dataclass
class PilotSpec:
    base: str
    train: str
    eval: str | None = None
    task: str | None = None  # advise's task (rules); default from --task-kind or the data's meta.json
    task_kind: str | None = None  # representation | sql | reasoning | other
    methods: list[str] = field(default_factory=lambda: ["lora", "full"])
    budget_min: float = 5.0
    out: str = "runs/pilot"
    points: list[int] | None = None  # explicit slice sizes instead of the budget's plan
    epochs: float = 2.0
    batch_size: int = 8
    max_seq_len: int = 256
    rank: int = 16
    eval_size: int = 80
    find_lr_steps: int = 30  # 0: use the size defaults
    seed: int = 0
    scorer: str | None = None


def check(spec: PilotSpec) -> list[str]:
    p = []
    if not Path(spec.train).is_file():
        p.append(f"--data: '{spec.train}' does not exist (give the training file: JSONL / JSON / CSV / Parquet)")
    if spec.eval and not Path(spec.eval).is_file():
        p.append(f"--eval: '{spec.eval}' does not exist")
    bad = [m for m in spec.methods if m not in METHODS]
    if bad or not spec.methods:
        p.append(f"--methods: unknown {bad or 'empty list'}; choose from {', '.join(METHODS)}")
    if spec.task_kind and spec.task_kind not in KINDS:
        p.append(f"--task-kind: '{spec.task_kind}' is not one of {', '.join(KINDS)}")
    if not spec.budget_min > 0:
        p.append(f"--budget must be > 0 minutes (got {spec.budget_min})")
    if spec.points is not None and (len(spec.points) < 1 or any(n < 1 for n in spec.points)
                                    or spec.points != sorted(set(spec.points))):
        p.append(f"--points must be growing example counts, e.g. 32,64,128 (got {spec.points})")
    for name in ("batch_size", "max_seq_len", "rank", "eval_size"):
        if getattr(spec, name) < 1:
            p.append(f"--{name.replace('_', '-')} must be >= 1")
    if spec.find_lr_steps and spec.find_lr_steps < 5:
        p.append("--find-lr-steps must be 0 (use the size defaults) or >= 5")
    return p


class Clock:
    def __init__(self, minutes: float, log):
        self.t0, self.limit, self.log = time.time(), minutes * 60, log

    def used(self) -> float:
        return time.time() - self.t0

    def left(self) -> float:
        return self.limit - self.used()

    def say(self, message: str) -> None:
        u, left = self.used(), max(self.left(), 0)
        self.log(f"[pilot {int(u) // 60}:{int(u) % 60:02d} used, {int(left) // 60}:{int(left) % 60:02d} left] {message}")


# ---------------------------------------------------------------------------------------------- data


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def prepare_data(spec: PilotSpec, out: Path) -> tuple[list[dict], Path]:
    """(training pool, validation file): --eval, else a held-out part of --data."""
    from tunewise.data.formats import read_records

    rows = [r.data for r in read_records(spec.train)]
    if len(rows) < 8:
        raise TunewiseError(f"{spec.train}: {len(rows)} record(s); a pilot needs at least 8",
                            "add data, or train directly with tunewise train")
    random.Random(spec.seed).shuffle(rows)
    if spec.eval:
        return rows, Path(spec.eval)
    held = min(max(8, len(rows) // 5), spec.eval_size)
    valid = _write_jsonl(out / "data" / "validation.jsonl", rows[:held])
    return rows[held:], valid


def eval_spec(spec: PilotSpec, valid: Path):
    from tunewise.evaluate.runner import apply_overrides, read_items, resolve_data

    source = spec.eval or spec.train  # its meta.json (a built-in task's folder) names the scorer
    es = resolve_data(data=source, limit=spec.eval_size, split="validation")
    es.items = read_items(valid, spec.eval_size)
    es.source = str(valid)
    return apply_overrides(es, scorer=spec.scorer)


def advise_task(spec: PilotSpec, meta_task: str | None) -> str:
    if spec.task:
        return spec.task
    if spec.task_kind:
        return advise_task_of(None, spec.task_kind)
    return advise_task_of(meta_task)


# ---------------------------------------------------------------------------------------------- runs


def stage_spec(spec: PilotSpec, method: str, train_file: Path, lr: float | None,
               eval_file: Path | None = None) -> StageSpec:
    """One pilot training (a slice, a range test or the recommendation) in the stage terms compare shares."""
    return StageSpec(spec.base, method, Path(train_file).resolve(), rank=spec.rank, max_seq_len=spec.max_seq_len,
                     batch_size=spec.batch_size, seed=spec.seed, lr=lr, epochs=spec.epochs, log_every=1,
                     eval_file=Path(eval_file).resolve() if eval_file else None)


def train_and_score(spec: PilotSpec, method: str, n: int, pool: list[dict], lr: float, es, out: Path) -> dict:
    from tunewise.evaluate.runner import evaluate, load_target
    from tunewise.rundir import CHECKPOINTS, OUTPUTS
    from tunewise.train import train

    t0 = time.time()
    slice_file = out / "data" / f"slice-{n}.jsonl"
    if not slice_file.is_file():
        _write_jsonl(slice_file, pool[:n])
    run_dir = out / "runs" / f"{method}-n{n}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a pilot's point is cheap; never mix two attempts
    cfg = stage_spec(spec, method, slice_file, lr).run_config()
    summary = train(cfg, run_dir, quiet=True).summary
    result = evaluate(load_target(str(run_dir)), es)
    for name in (*OUTPUTS, CHECKPOINTS):  # the weights were only needed for the score
        shutil.rmtree(run_dir / name, ignore_errors=True)
    return {"method": method, "n": n, "score": result.metrics.get(result.primary), "metric": result.primary,
            "lr": lr, "steps": summary.steps, "final_train_loss": summary.final_train_loss,
            "seconds": round(time.time() - t0, 1), "eval_n": result.n,
            "items": [item_pair(r, result.primary) for r in result.predictions]}  # the paired gap's input


def plan_next(done: list[dict], n_prev: int, n_max: int, left_s: float, methods: int, remaining_points: int) -> int | None:
    """The next slice size: the largest growth in GROWTH whose predicted cost (time proportional to the slice,
    from the runs so far: conservative, as part of each run's time is fixed) fits the time left for the remaining
    points. None when not even the smallest growth fits."""
    per_example = max(r["seconds"] / r["n"] for r in done)  # seconds per example, slowest method
    for g in (4.0, 3.0, 2.0, GROWTH[0]):
        sizes = [min(n_max, round(n_prev * g**k)) for k in range(1, remaining_points + 1)]
        cost = sum(sizes) * per_example * methods
        if cost <= 0.9 * left_s and sizes[0] > n_prev:
            return sizes[0]
    return None


def point_cost(runs: list[dict], step_s: dict[str, float], method: str, n: int, spec: PilotSpec,
               eval_s: float) -> float | None:
    """Predicted seconds to train and score `method` on n examples: from its own runs (proportional to n: an
    over-estimate, as part of a run's time is fixed), else from a range test's seconds per step plus one scoring;
    None when nothing has been timed yet."""
    mine = [r for r in runs if r["method"] == method]
    if mine:
        return max(r["seconds"] / r["n"] for r in mine) * n
    per_step = step_s.get(method) or max(step_s.values(), default=None)
    if per_step is None:
        return None
    steps = math.ceil(math.ceil(n / spec.batch_size) * spec.epochs)
    return steps * per_step + eval_s


# ---------------------------------------------------------------------------------------------- the pilot


def run_pilot(spec: PilotSpec, log=print) -> dict:
    from tunewise.advise.engine import AdviseInput, advise
    from tunewise.advise.pilot_verdict import decide
    from tunewise.evaluate.runner import evaluate, load_target

    problems = check(spec)
    if problems:
        raise TunewiseError("; ".join(problems), "see tunewise pilot --help")
    _refuse_encoder(spec.base)
    clock = Clock(spec.budget_min, log)
    out = Path(spec.out)
    pool, valid = prepare_data(spec, out)
    es = eval_spec(spec, valid)
    task = advise_task(spec, es.task)
    clock.say(f"{len(pool)} training examples, {len(es.items)} validation examples scored with '{es.scorer_name}'; "
              f"rules for task '{task}'")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    advice = advise(AdviseInput(task=task, model=spec.base, dataset=spec.train, device=device))
    plan_or_refuse(spec, clock, es)
    t_eval = time.time()
    base_eval = evaluate(load_target(spec.base), es)
    eval_s = time.time() - t_eval  # what scoring one point costs, roughly
    base_score = base_eval.metrics.get(base_eval.primary)
    clock.say(f"untuned base: {base_eval.primary} {base_score:.3f}")

    pool_file = _write_jsonl(out / "data" / "train-pool.jsonl", pool)
    lrs, lr_notes, step_s = _learning_rates(spec, clock, pool_file, out)
    runs, skipped = _measure(spec, clock, pool, lrs, step_s, es, out, eval_s)
    n_full = len(pool)
    preds, curves = _predict(spec, runs, n_full, advice)
    paired = _paired(runs)
    rule_reasons = [r["reason"] for r in advice.reasons if r.get("weight", 0) > 0][:2]
    verdict = decide(preds, advice.preferred, rule_reasons, base_score, paired=paired, n_full=n_full)
    result = {"spec": asdict(spec), "task": task, "scorer": es.scorer_name, "metric": base_eval.primary,
              "full_size": n_full, "validation": str(valid), "validation_n": len(es.items),
              "base_score": base_score, "lr": lrs, "lr_notes": lr_notes, "runs": runs, "curves": curves,
              "predictions": {m: asdict(p) for m, p in preds.items()}, "skipped": skipped,
              "paired": paired.as_dict() if paired else None,
              "rules": {"preferred": advice.preferred, "scores": advice.scores, "reasons": rule_reasons,
                        "memory": {m: {"fits": p.fits, "gib": round(p.total_gb, 2)} for m, p in advice.plans.items()}},
              "verdict": verdict.as_dict(), "seconds": round(clock.used(), 1), "budget_s": clock.limit}
    if verdict.recommendation:
        result["config"] = str(_write_recommendation(spec, verdict, lrs, lr_notes, out))
    atomic_write_json(out / "pilot.json", result)
    from tunewise.advise.pilot_report import write_html

    result["html"] = str(write_html(result, out))
    clock.say(f"done: {verdict.recommendation} ({verdict.evidence})")
    return result


PROBE_EXAMPLES = 4  # validation examples scored first, to measure what scoring costs before spending the budget


def plan_or_refuse(spec: PilotSpec, clock: Clock, es) -> float:
    """Measure the scoring rate on a few validation examples, print the plan, and refuse up front -- naming the
    budget that would do -- when the budget cannot buy a measurement: the base and each method scored once on
    the validation set, plus at least one optimizer step's worth of training per method. Seconds per example."""
    from tunewise.evaluate.runner import evaluate, load_target

    n = len(es.items)
    probe = copy.copy(es)
    probe.items = es.items[:PROBE_EXAMPLES]
    t0 = time.time()
    evaluate(load_target(spec.base), probe)
    per_example = (time.time() - t0) / max(len(probe.items), 1)
    methods = len(spec.methods)
    scoring = per_example * n * (1 + methods)  # the untuned base, then each method at its first slice
    training = methods * per_example * PROBE_EXAMPLES  # a floor: a model load and a few steps per method
    need = scoring + training + clock.used()
    clock.say(f"plan: scoring costs ~{per_example:.1f}s per validation example here, so the base and "
              f"{methods} method(s) on {n} examples need ~{scoring / 60:.1f} min; range tests get up to "
              f"{FIND_LR_SHARE:.0%} of the budget; the rest trains growing slices")
    if need > clock.limit:
        minutes = math.ceil(1.5 * need / 60)  # room for one slice per method beyond the floor
        raise TunewiseError(f"--budget {spec.budget_min:g} min cannot buy a measurement: scoring the base and "
                            f"{methods} method(s) once on {n} validation examples takes ~{scoring / 60:.1f} min "
                            f"here before any training",
                            f"give --budget {minutes} or more, or fewer validation examples (--eval-size "
                            f"{max(8, int(n * clock.limit / need / 2))}); without a pilot, `tunewise advise` "
                            "answers from the rule table at once")
    return per_example


def _learning_rates(spec: PilotSpec, clock: Clock, pool_file: Path, out: Path) -> tuple[dict, dict, dict]:
    """(lr, how it was chosen, seconds per optimizer step) per method: a range test while the budget allows,
    else the size default."""
    from tunewise.train.find_lr import range_test, write_result

    lrs, lr_notes = {}, {}
    step_s: dict[str, float] = {}  # seconds per optimizer step (with the model load), from the range tests
    share = FIND_LR_SHARE * clock.limit / len(spec.methods)
    for m in spec.methods:
        if spec.find_lr_steps and clock.left() > 0.5 * clock.limit:
            test = range_test(stage_spec(spec, m, pool_file, None).run_config(), spec.find_lr_steps,
                              max_seconds=share)
            step_s[m] = test.seconds / max(len(test.losses), 1)
            write_result(test, (out / "find_lr" / m))
            if test.suggestion:
                lrs[m] = float(f"{test.suggestion.lr:.3g}")
                lr_notes[m] = f"find-lr: {lrs[m]:g} (lowest smoothed loss at {test.suggestion.min_loss_lr:.3g} / {test.suggestion.divisor:g})"
            else:
                lrs[m], lr_notes[m] = test.size_default_lr, f"size default {test.size_default_lr:g} ({test.error})"
            clock.say(f"{m}: {lr_notes[m]} ({test.seconds:.0f}s)")
        else:
            from tunewise.defaults import default_lr, lr_source

            n_params = _n_params(spec.base)
            lrs[m] = default_lr(m, n_params)[0]
            why = "--find-lr-steps 0" if not spec.find_lr_steps else "no time left for the range test"
            lr_notes[m] = f"size default {lrs[m]:g} ({why}; evidence: {lr_source(n_params)})"
            clock.say(f"{m}: {lr_notes[m]}")
    return lrs, lr_notes, step_s


def _measure(spec: PilotSpec, clock: Clock, pool: list, lrs: dict, step_s: dict, es, out: Path,
             eval_s: float) -> tuple[list[dict], list[str]]:
    """Train and score each method on growing slices while the budget lasts: (runs, what was skipped)."""
    n_full = len(pool)
    # explicit points are capped at the data (and then deduplicated); else the first slice is 1/8, 16 to 64
    sizes = sorted({min(n, n_full) for n in spec.points}) if spec.points else [max(min(16, n_full),
                                                                                  min(n_full // 8, 64))]
    runs: list[dict] = []
    skipped: list[str] = []
    k = 0
    while k < (len(sizes) if spec.points else 3):
        if k >= len(sizes):
            # the largest slice that leaves room for the remaining points; else for fewer of them
            nxt = next((x for r in range(3 - k, 0, -1)
                        if (x := plan_next(runs, sizes[-1], n_full, clock.left(), len(spec.methods), r))), None)
            if nxt is None:
                skipped.append(f"point {k + 1}: no time left in the budget for a larger slice")
                clock.say(skipped[-1])
                break
            sizes.append(nxt)
        n = min(sizes[k], n_full)
        if clock.left() <= 0:
            skipped.append(f"n={n}: the budget is spent")
            clock.say(skipped[-1])
            break
        for m in spec.methods:
            need = point_cost(runs, step_s, m, n, spec, eval_s)
            if need is not None and clock.left() < need:
                skipped.append(f"{m} at n={n}: would not finish inside the budget (~{need:.0f}s needed, "
                               f"{max(clock.left(), 0):.0f}s left)")
                clock.say(skipped[-1])
                continue
            r = train_and_score(spec, m, n, pool, lrs[m], es, out)
            runs.append(r)
            clock.say(f"{m} n={n}: {r['metric']} {r['score']:.3f} ({r['steps']} steps, {r['seconds']:.0f}s)")
        k += 1
        if skipped and not spec.points:
            break
    return runs, skipped


def _predict(spec: PilotSpec, runs: list[dict], n_full: int, advice) -> tuple[dict, dict]:
    """Per method with a measured point: the learning curve's prediction at the full data, and the curve."""
    from tunewise.advise.curves import binomial_sigma, fit_curve
    from tunewise.advise.pilot_verdict import Prediction

    preds, curves = {}, {}
    for m in spec.methods:
        pts = [r for r in runs if r["method"] == m and r["score"] is not None]
        if not pts:
            continue
        fit = fit_curve([r["n"] for r in pts], [r["score"] for r in pts],
                        [binomial_sigma(r["score"], r["eval_n"]) for r in pts])
        lo, hi = fit.interval(n_full)
        plan = advice.plans.get(m)
        preds[m] = Prediction(m, fit.predict(n_full), lo, hi, max(r["score"] for r in pts),
                              plan.total_gb if plan else None, plan.fits if plan else True)
        curves[m] = fit.as_dict(at=n_full)
    return preds, curves


def paired_runs(full: dict, other: dict) -> PairedGap:
    """full - other, example by example, of two runs train_and_score scored on the same validation examples."""
    return paired_gap(full["items"], other["items"], full["n"])


def _paired(runs: list[dict]) -> PairedGap | None:
    """The paired difference full - adapter at the largest slice on which both were scored, or None."""
    by = {(r["method"], r["n"]): r for r in runs if r.get("items") and r["score"] is not None}
    adapter = "lora" if any(m == "lora" for m, _ in by) else "qlora"
    shared = sorted(n for m, n in by if m == "full" and (adapter, n) in by)
    if not shared:
        return None
    return paired_runs(by[("full", shared[-1])], by[(adapter, shared[-1])])


def _write_recommendation(spec: PilotSpec, verdict, lrs: dict, lr_notes: dict, out: Path) -> Path:
    """recommended.yaml: the recommended method's train config on the whole data, with the measured lr."""
    from tunewise.config import dump_config

    rec = verdict.recommendation
    cfg = stage_spec(spec, rec, Path(spec.train), lrs.get(rec), spec.eval).run_config()
    text = (f"# tunewise pilot: {rec} ({verdict.evidence} evidence); lr: "
            f"{lr_notes.get(rec, 'size default')}\n" + dump_config(cfg))
    return atomic_write_text(out / "recommended.yaml", text)


def _refuse_encoder(base: str) -> None:
    from tunewise.models import load_config

    archs = getattr(load_config(base), "architectures", None) or []
    if archs and not any(a.endswith("ForCausalLM") for a in archs):
        raise TunewiseError(f"--base {base} ({archs[0]}) is not a causal LM; the pilot trains and scores causal LMs "
                            "only", "compare an encoder's methods with tunewise compare --base " + base)


def _n_params(base: str) -> int:
    from tunewise.model_size import parameter_count

    return parameter_count(base)
