"""`tunewise compare`: LoRA, QLoRA and full fine-tuning on the same data, budget and evaluation, side by side.

The seed's rule of thumb -- start with LoRA, graduate to full fine-tuning where reasoning gaps remain -- as one
command. Each method's run lives in OUT/runs/<method>; a finished method is reused when the command is repeated
with the same base files, settings and data (anything else trains it again), an interrupted one is resumed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pydantic import Field, model_validator

from tunewise.defaults import METHODS, TINY_BASE, default_lr
from tunewise.errors import ConfigError, TunewiseError
from tunewise.fileio import atomic_write_json, atomic_write_text, file_digest
from tunewise.inputs import Strict
from tunewise.results import RetentionChange
from tunewise.rundir import RunDir

TASK_KIND = {"structured": "representation", "classify": "representation", "sql": "sql", "math": "reasoning",
             "math-hard": "reasoning"}
KINDS = ("representation", "sql", "reasoning", "other")
WITHIN_POINTS = 2.0  # the seed's representation gap (95% vs 97%): absorbable
GRADUATE_POINTS = 5.0  # a gap this large on reasoning: graduate to full fine-tuning


class CompareSpec(Strict):
    """What `tunewise compare` runs; the values' sense is checked by check_spec, with the flags' names."""

    base: str = Field(TINY_BASE, description="Base model: 'tiny', a folder or a hub id.")
    task: str | None = Field("structured", description="A built-in task, or None with `data`.")
    data: str | None = Field(None, description="A folder with train/validation/test JSONL (+ meta.json), for "
                                               "user data.")
    task_kind: str | None = Field(None, description="representation | sql | reasoning | other (default: from "
                                                    "the task).")
    methods: list[str] = Field(default_factory=lambda: list(METHODS), description="Methods to train, in order.")
    out: str = Field("runs/compare", description="Output folder; repeated runs reuse finished methods.")
    rank: int = Field(16, description="LoRA / QLoRA rank.")
    epochs: float = Field(2.0, description="Same budget for every method.")
    max_steps: int | None = Field(None, description="Stop each method after this many steps (overrides epochs).")
    batch_size: int = Field(16, description="Examples per optimizer step.")
    lr: dict[str, float] = Field(default_factory=dict, description="Per-method lr; default by model size "
                                                                   "(tunewise/defaults.py).")
    train_size: int = Field(400, description="Training examples generated for a built-in task.")
    eval_size: int = Field(60, description="Test examples scored per method.")
    max_seq_len: int = Field(160, description="Longest example in tokens.")
    probes: list[str] | None = Field(None, description="Retention probes; default: tasks.probes.default_probes("
                                                       "base).")
    seed: int = Field(0, description="Seed of the generated task and of training.")
    analyze: bool = Field(True, description="Count intruder dimensions of each tuned model.")

    @model_validator(mode="after")
    def _default_probes(self) -> CompareSpec:
        if self.probes is None:
            from tunewise.tasks.probes import default_probes

            self.probes = default_probes(self.base)
        return self

    @property
    def kind(self) -> str:
        return self.task_kind or TASK_KIND.get(self.task or "", "other")


def check_spec(spec: CompareSpec) -> None:
    problems = []
    bad = [m for m in spec.methods if m not in METHODS]
    if bad or not spec.methods:
        problems.append(f"--methods: unknown {bad or 'empty list'}; choose from {', '.join(METHODS)}")
    if (spec.task is None) == (spec.data is None):
        problems.append("give exactly one of --task (structured, classify, sql, math) or --data DIR")
    if spec.kind not in KINDS:
        problems.append(f"--task-kind: '{spec.kind}' is not one of {', '.join(KINDS)}")
    if spec.rank <= 0:
        problems.append(f"--rank must be > 0 (got {spec.rank}); typical values are 16 or 32")
    if spec.data and not (Path(spec.data) / "train.jsonl").is_file():
        problems.append(f"--data {spec.data}: expected train.jsonl (and validation.jsonl, test.jsonl) in it")
    if problems:
        raise ConfigError(problems, hint="see tunewise compare --help", what="the options")


def prepare_data(spec: CompareSpec, out: Path) -> Path:
    if spec.data:
        return Path(spec.data)
    from tunewise.tasks import ensure_task, task_format_for

    sizes = {"train": spec.train_size, "validation": max(16, spec.eval_size // 2), "test": spec.eval_size}
    return ensure_task(spec.task, out / "data", sizes, spec.seed, task_format_for(spec.base))


def encoder_labels(base: str, data: Path) -> list[str] | None:
    """For a base without a causal LM head (e.g. MiniLM), the class labels of the data; None for causal LMs."""
    from tunewise.models import load_config

    archs = getattr(load_config(base), "architectures", None) or []
    if any(a.endswith("ForCausalLM") for a in archs) or not archs:
        return None
    from tunewise.data.formats import read_records

    # the trainer's reader and its classification rule (completion, else label)
    labels = {str(r.data.get("completion", r.data.get("label", ""))).strip()
              for r in read_records(data / "train.jsonl")}
    return sorted(labels)


def run_config(spec: CompareSpec, method: str, data: Path, lr: float, labels: list[str] | None = None):
    from tunewise.stage import stage_config

    eval_file = data / "validation.jsonl"
    return stage_config(spec.base, method, data / "train.jsonl", rank=spec.rank, max_seq_len=spec.max_seq_len,
                        batch_size=spec.batch_size, seed=spec.seed, lr=lr, epochs=spec.epochs,
                        max_steps=spec.max_steps, eval_file=eval_file if eval_file.is_file() else None,
                        log_every=1, probes=spec.probes, labels=labels)


def train_method(spec: CompareSpec, method: str, data: Path, out: Path, lr: float, quiet: bool,
                 labels: list[str] | None = None) -> dict:
    """Train one method as a stage (tunewise.stage: reused when finished from the same base, settings and data,
    resumed when interrupted), in its own process so its peak memory is its own; its summary."""
    from tunewise.config import dump_config
    from tunewise.stage import Stage, stage_key

    run_dir = out / "runs" / method
    cfg_path = out / "configs" / f"{method}.yaml"
    train_file = data / "train.jsonl"
    resolved = dump_config(run_config(spec, method, data, lr, labels))
    config_text = f"# train data sha256 {file_digest(train_file)}\n" + resolved  # what the run was trained on
    stage = Stage(run_dir, run_dir, out / "configs" / f"{method}.stage.json",
                  stage_key(spec.base, resolved, [train_file]))
    _adopt_earlier_run(stage, cfg_path, config_text, spec.base)

    def train(resume: bool) -> None:
        atomic_write_text(cfg_path, config_text)
        _train_subprocess(method, cfg_path, run_dir, resume, quiet)

    reused = stage.run(train).get("reused", False)
    summary = RunDir(run_dir).summary()
    return summary | {"reused": True} if reused else summary


def _train_subprocess(method: str, cfg_path: Path, run_dir: Path, resume: bool, quiet: bool) -> None:
    cmd = [sys.executable, "-m", "tunewise", "train", str(cfg_path)]
    cmd += ["--resume", str(run_dir)] if resume else ["--out", str(run_dir)]
    if quiet:
        cmd.append("-q")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE if quiet else subprocess.DEVNULL,
                          stderr=subprocess.PIPE if quiet else None, text=True)
    if proc.returncode not in (0, 1) or not RunDir(run_dir).summary_path.is_file():  # 1 = a skill dropped
        tail = (proc.stderr or "").strip().splitlines()[-1:] if quiet else []
        raise TunewiseError(f"training {method} failed (exit {proc.returncode}){': ' + tail[0] if tail else ''}",
                            f"rerun `{' '.join(cmd)}` to see the full output; finished methods are kept")


def _adopt_earlier_run(stage, cfg_path: Path, config_text: str, base: str) -> None:
    """A compare folder from before stage records: the same config file and the summary's base fingerprint meant
    the same stage, so record it (finished, or interrupted to resume) instead of training it again."""
    from tunewise.models import base_fingerprint
    from tunewise.stage import FINISHED, TRAINING

    if stage.record.is_file() or not cfg_path.is_file() or cfg_path.read_text() != config_text:
        return
    run = RunDir(stage.run_dir)
    summary = run.summary()
    if summary is not None and summary.get("base_fingerprint") != base_fingerprint(base):
        return
    status = FINISHED if run.completed else TRAINING
    atomic_write_json(stage.record, {"cache_key": stage.key, "status": status})


def evaluate_method(target: str, data: Path, limit: int, out_dir: Path, model_key: str = "") -> dict:
    """Score a run directory (or the untuned base) on the test split; cached in OUT_DIR/eval.json for the same
    model (`model_key`, e.g. the base's fingerprint), test examples and limit, while the scorer still heads its
    metrics the same way (a cache written before a scorer changed its primary is scored again)."""
    from tunewise.tasks.scorers import SCORERS

    cached = out_dir / "eval.json"
    key = f"{model_key}:{file_digest(data / 'test.jsonl')}:{limit}"
    if cached.is_file():
        summary = json.loads(cached.read_text())
        scorer = SCORERS.get(summary.get("scorer"))
        if scorer is not None and summary.get("primary") == scorer.primary and summary.get("cache_key") == key:
            return summary
    from tunewise.evaluate.runner import evaluate, load_target, resolve_data

    spec = resolve_data(data=str(data), split="test", limit=limit)
    result = evaluate(load_target(target), spec)
    summary = result.summary() | {"cache_key": key}
    atomic_write_json(cached, summary)
    atomic_write_text(out_dir / "predictions.jsonl", "".join(json.dumps(p) + "\n" for p in result.predictions))
    return summary


def intruders_of(base: str, run_dir: Path) -> dict:
    cached = RunDir(run_dir).analysis_path
    if cached.is_file():
        return json.loads(cached.read_text())
    from tunewise.analysis.pipeline import analyze

    slim = analyze(base, str(run_dir), k=10, eps=(0.5,)).slim(0.5)
    atomic_write_json(cached, slim)
    return slim


def row_for(method: str, summary: dict, evaluation: dict, intruders: dict | None, run_dir: Path) -> dict:
    events = summary.get("guard_events", [])
    return {
        "method": method, "score": evaluation.get("score"), "metric": evaluation.get("primary"),
        "metrics": evaluation.get("metrics"), "retention": summary.get("retention"),
        "trainable_params": summary["trainable_params"], "total_params": summary["total_params"],
        "output_size_mb": RunDir(run_dir).output_size_mb(), "train_time_s": summary["train_time_s"],
        "tokens_per_s": summary["tokens_per_s"], "peak_rss_mb": summary["peak_rss_mb"],
        "peak_cuda_mb": summary.get("peak_cuda_mb"), "final_train_loss": summary["final_train_loss"],
        "final_eval_loss": summary["final_eval_loss"], "lr": summary["lr"], "steps": summary["steps"],
        "guard_events": {g: sum(1 for e in events if e["guard"] == g) for g in sorted({e["guard"] for e in events})},
        "intruders": intruders["total"] if intruders else None, "run_dir": str(run_dir),
        "reused": bool(summary.get("reused")),
    }


def method_lr(spec: CompareSpec, method: str, n_params: int, encoder: bool) -> tuple[float, str]:
    """(lr, note): the one given with --lr, else the size default (tunewise.defaults, as train and advise)."""
    return (spec.lr[method], "given") if method in spec.lr else default_lr(method, n_params, encoder)


def run_compare(spec: CompareSpec, quiet: bool = False, log=print) -> dict:
    check_spec(spec)
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(spec, out)
    from tunewise.models import base_fingerprint, count_parameters, load_model

    labels = encoder_labels(spec.base, data)
    task = "sequence-classification" if labels else "causal-lm"
    n_params = count_parameters(load_model(spec.base, task=task, num_labels=len(labels) if labels else None))
    rows, lr_notes = {}, {}
    for method in spec.methods:
        lr, note = method_lr(spec, method, n_params, bool(labels))
        lr_notes[method] = note
        t0 = time.time()
        summary = train_method(spec, method, data, out, lr, quiet, labels)
        run_dir = out / "runs" / method
        log(f"{method}: {'reused finished run' if summary.get('reused') else 'trained'} "
            f"({time.time() - t0:.0f}s); evaluating")
        evaluation = evaluate_method(str(run_dir), data, spec.eval_size, run_dir)
        intruders = intruders_of(spec.base, run_dir) if spec.analyze and not labels else None
        rows[method] = row_for(method, summary, evaluation, intruders, run_dir)
    base_eval = None if labels else evaluate_method(spec.base, data, spec.eval_size, out / "base",
                                                    model_key=base_fingerprint(spec.base))
    metric = next(iter(rows.values()))["metric"]
    base_row = {"score": (base_eval["metrics"] or {}).get(metric), "metric": metric} if base_eval else None
    base_score = base_row["score"] if base_row else None
    result = {"spec": spec.model_dump(), "kind": spec.kind, "data": str(data), "base_params": n_params, "base": base_row,
              "lr_notes": lr_notes, "rows": rows, "verdict": verdict(rows, spec.kind, base_score, str(data / "train.jsonl")),
              "advice": _advice(spec), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_json(out / "compare.json", result)
    return result


def _advice(spec: CompareSpec) -> dict | None:
    """What `tunewise advise` says for this task and model, for the report's 'advice that led here'."""
    task = {"structured": "structured", "classify": "classification", "sql": "sql", "math": "math",
            "math-hard": "math"}.get(
        spec.task or "", "open-ended")
    try:
        from tunewise.advise.engine import AdviseInput, advise

        return advise(AdviseInput(task=task, model=spec.base, device="cpu")).as_dict()
    except TunewiseError as e:
        return {"error": e.message}


# ---------------------------------------------------------------------------------------------- verdict


def verdict(rows: dict[str, dict], kind: str, base_score: float | None = None,
            train_file: str = "train.jsonl") -> dict:
    """The framework's call from the measured rows and the untuned base's score (pure: numbers in, sentences out)."""
    lines: list[str] = []
    scores = [r["score"] for r in rows.values() if r.get("score") is not None]
    if base_score is not None and scores and max(scores) <= base_score:
        lines.append(f"No method beats the untuned base ({base_score:.3g}) at this budget, so the rest of this "
                     "verdict says little yet: train longer or on more data before choosing.")
    adapter = rows.get("lora") or rows.get("qlora")
    full = rows.get("full")
    recommendation = adapter["method"] if adapter else ("full" if full else None)
    if adapter and full and adapter["score"] is not None and full["score"] is not None:
        name = "LoRA" if adapter["method"] == "lora" else "QLoRA"
        gap = 100 * (full["score"] - adapter["score"])
        mem = adapter["peak_rss_mb"] / full["peak_rss_mb"]
        if abs(gap) < 0.05:
            lines.append(f"{name} matches full fine-tuning at {mem:.0%} of the memory: keep {name}.")
        elif gap < 0:
            lines.append(f"{name} beats full fine-tuning by {-gap:.1f} points at {mem:.0%} of the memory: "
                         f"keep {name}.")
        elif gap <= WITHIN_POINTS:
            lines.append(f"{name} is within {gap:.1f} points of full fine-tuning at {mem:.0%} of the memory: "
                         f"keep {name}.")
        elif kind == "reasoning" and gap > GRADUATE_POINTS:
            lines.append(f"{name} trails by {gap:.1f} points on a reasoning task: graduate to full fine-tuning.")
            recommendation = "full"
        elif gap > GRADUATE_POINTS:
            lines.append(f"{name} trails by {gap:.1f} points on a {kind} task: tune {name} first (rank 32, "
                         "alpha = 2r, a sweep of the lr); if the gap stays, graduate to full fine-tuning.")
        else:
            lines.append(f"{name} trails by {gap:.1f} points (the seed reports about 2 on representation tasks): keep "
                         f"{name} unless those points justify the cost of full fine-tuning.")
    if rows.get("lora") and rows.get("qlora"):
        lo, q = rows["lora"], rows["qlora"]
        mem = 1 - q["peak_rss_mb"] / lo["peak_rss_mb"]
        slower = q["train_time_s"] / max(lo["train_time_s"], 1e-9) - 1
        diff = 100 * ((q["score"] or 0) - (lo["score"] or 0))
        memory = f"{mem:.0%} less" if mem >= 0 else f"{-mem:.0%} more"
        time_ = f"{slower:.0%} more" if slower >= 0 else f"{-slower:.0%} less"
        lines.append(f"QLoRA used {memory} peak memory and {time_} time than LoRA, scoring {diff:+.1f} points "
                     "(the seed: about 33% less memory for about 39% more time on GPU).")
    if adapter and full and adapter.get("intruders") is not None and full.get("intruders") is not None:
        lines.append(f"Intruder dimensions (top-10, eps 0.5): {adapter['method']} {adapter['intruders']}, "
                     f"full {full['intruders']}.")
    worst = _worst_forgetting(rows, train_file)
    if worst:
        lines.append(worst)
    return {"recommendation": recommendation, "lines": lines, "text": " ".join(lines)}


def _worst_forgetting(rows: dict[str, dict], train_file: str = "train.jsonl") -> str | None:
    worst = None
    for method, row in rows.items():
        for probe, c in (row.get("retention") or {}).items():
            worse_by = RetentionChange.from_dict(c).worse_by
            if worse_by is not None and (worst is None or worse_by > worst[0]):
                worst = (worse_by, method, probe)
    if worst and worst[0] > 0.05:
        from tunewise.data.mix import mix_config_line

        return (f"Largest loss of a base skill: {worst[1]} on '{worst[2]}' ({worst[0]:.0%} worse); mix examples of "
                f"that skill into the training data to preserve it: {mix_config_line(train_file, worst[2])}")
    return None
