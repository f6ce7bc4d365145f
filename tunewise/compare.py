"""`tunewise compare`: LoRA, QLoRA and full fine-tuning on the same data, budget and evaluation, side by side.

The seed's rule of thumb -- start with LoRA, graduate to full fine-tuning where reasoning gaps remain -- as one
command. Each method's run lives in OUT/runs/<method>; a finished method is reused when the command is repeated
with the same base files, settings and data (anything else trains it again), an interrupted one is resumed.

Each method trains in its own child process (`python -m tunewise train`): peak memory (RSS, CUDA) is a process's
high-water mark, so only a fresh process gives each method a peak figure of its own, which the verdict compares.
Each training is a stage (tunewise.stage.StageSpec); a run's scoring is kept in its eval layout
(RUN/eval/compare/, tunewise.rundir); each method's row is a CompareRow, written to compare.json at the end.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from pydantic import Field, model_validator

from tunewise.advise.engine import AdviseInput, advise
from tunewise.analysis.pipeline import analyze
from tunewise.config import dump_config
from tunewise.data.formats import read_records
from tunewise.data.mix import mix_config_line
from tunewise.data.seq_len import task_seq_len
from tunewise.decide import Call, make_call, measure_gap, scores_from_records
from tunewise.decide.call import name as method_name
from tunewise.decide.vocabulary import KINDS, advise_task_of, kind_of
from tunewise.defaults import METHODS, TINY_BASE, default_lr
from tunewise.errors import ConfigError, TunewiseError
from tunewise.evaluate.runner import apply_overrides, evaluate, load_target, resolve_data
from tunewise.fileio import atomic_write_json, atomic_write_text, file_digest
from tunewise.inputs import Strict
from tunewise.model_size import parameter_count
from tunewise.models import base_fingerprint, load_config
from tunewise.results import RetentionChange
from tunewise.rundir import COMPARE_EVAL, LEGACY_EVAL, EvalFiles, RunDir
from tunewise.stage import FINISHED, TRAINING, Stage, StageSpec, stage_key
from tunewise.tasks import ensure_task, task_format_for
from tunewise.tasks.probes import default_probes
from tunewise.tasks.scorers import SCORERS, check_scorer, is_custom


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
    eval_size: int = Field(150, description="Test examples scored per method.")
    max_seq_len: int | None = Field(None, description="Longest example in tokens; default: the data's longest "
                                                      "tokenized example, up to the model's context.")
    allow_truncation: bool = Field(False, description="Train even when more than 5% of the examples would be cut "
                                                      "to max_seq_len.")
    seeds: int = Field(1, description="Train and score each method this many times (seeds seed, seed+1, ...).")
    scorer: str | None = Field(None, description="A built-in scorer or your own MODULE:FUNCTION (default: the "
                                                 "task's, from meta.json).")
    probes: list[str] | None = Field(None, description="Retention probes; default: tasks.probes.default_probes("
                                                       "base).")
    seed: int = Field(0, description="Seed of the generated task and of training.")
    analyze: bool = Field(True, description="Count intruder dimensions of each tuned model.")

    @model_validator(mode="after")
    def _default_probes(self) -> CompareSpec:
        if self.probes is None:
            self.probes = default_probes(self.base)
        return self

    @property
    def kind(self) -> str:
        return self.task_kind or kind_of(self.task)


def check_spec(spec: CompareSpec) -> None:
    problems = []
    bad = [m for m in spec.methods if m not in METHODS]
    if bad or not spec.methods:
        problems.append(f"--methods: unknown {bad or 'empty list'}; choose from {', '.join(METHODS)}")
    if (spec.task is None) == (spec.data is None):
        problems.append("give exactly one of --task (structured, classify, sql, math) or --data DIR")
    if spec.kind not in KINDS:
        problems.append(f"--task-kind: '{spec.kind}' is not one of {', '.join(KINDS)}")
    if spec.seeds < 1 or spec.seeds > 20:
        problems.append(f"--seeds must be 1-20 (got {spec.seeds}); 3 measures the seed-to-seed spread")
    if spec.scorer:
        try:
            check_scorer(spec.scorer)
        except TunewiseError as e:
            problems.append(e.message if e.message.startswith("--scorer") else f"--scorer: {e.message}")
    if spec.max_seq_len is not None and spec.max_seq_len < 8:
        problems.append(f"--max-seq-len must be >= 8 tokens (got {spec.max_seq_len})")
    if spec.rank <= 0:
        problems.append(f"--rank must be > 0 (got {spec.rank}); typical values are 16 or 32")
    if spec.data and not (Path(spec.data) / "train.jsonl").is_file():
        problems.append(f"--data {spec.data}: expected train.jsonl (and validation.jsonl, test.jsonl) in it")
    if problems:
        raise ConfigError(problems, hint="see tunewise compare --help", what="the options")


def prepare_data(spec: CompareSpec, out: Path) -> Path:
    if spec.data:
        return Path(spec.data)
    sizes = {"train": spec.train_size, "validation": max(16, spec.eval_size // 2), "test": spec.eval_size}
    return ensure_task(spec.task, out / "data", sizes, spec.seed, task_format_for(spec.base))


def encoder_labels(base: str, data: Path) -> list[str] | None:
    """For a base without a causal LM head (e.g. MiniLM), the class labels of the data; None for causal LMs."""
    archs = getattr(load_config(base), "architectures", None) or []
    if any(a.endswith("ForCausalLM") for a in archs) or not archs:
        return None
    # the trainer's reader and its classification rule (completion, else label)
    labels = {str(r.data.get("completion", r.data.get("label", ""))).strip()
              for r in read_records(data / "train.jsonl")}
    return sorted(labels)


def trial_label(method: str, seed_index: int) -> str:
    """The folder name of one training of a method: `lora` for the first seed, `lora-seed1` for the next."""
    return method if seed_index == 0 else f"{method}-seed{seed_index}"


def sequence_length(spec: CompareSpec, data: Path, labels: list[str] | None, log=print) -> int:
    """--max-seq-len, else the data's longest tokenized example, up to the model's context (data/seq_len.py)."""
    if labels:  # a sequence classifier: its own reader, short texts
        return spec.max_seq_len or 160
    return task_seq_len(spec.base, data, spec.max_seq_len, spec.allow_truncation, log)


def stage_spec(spec: CompareSpec, method: str, data: Path, lr: float, labels: list[str] | None = None,
               seed_index: int = 0, max_seq_len: int = 160) -> StageSpec:
    """What one method's training with one seed is: the flags' settings on the task folder's splits."""
    eval_file = data / "validation.jsonl"
    return StageSpec(spec.base, method, data / "train.jsonl", rank=spec.rank, max_seq_len=max_seq_len,
                     batch_size=spec.batch_size, seed=spec.seed + seed_index, lr=lr, epochs=spec.epochs,
                     max_steps=spec.max_steps, eval_file=eval_file if eval_file.is_file() else None, log_every=1,
                     probes=tuple(spec.probes) if spec.probes is not None else None,
                     labels=tuple(labels) if labels else None)


def train_method(spec: CompareSpec, method: str, data: Path, out: Path, lr: float, quiet: bool,
                 labels: list[str] | None = None, seed_index: int = 0, max_seq_len: int = 160) -> dict:
    """Train one method with one seed as a stage (tunewise.stage: reused when finished from the same base,
    settings and data, resumed when interrupted), in its own process so its peak memory is its own; its summary."""
    label = trial_label(method, seed_index)
    run_dir = out / "runs" / label
    cfg_path = out / "configs" / f"{label}.yaml"
    train_file = data / "train.jsonl"
    resolved = dump_config(stage_spec(spec, method, data, lr, labels, seed_index, max_seq_len).run_config())
    config_text = f"# train data sha256 {file_digest(train_file)}\n" + resolved  # what the run was trained on
    stage = Stage(run_dir, run_dir, out / "configs" / f"{label}.stage.json",
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
    if stage.record.is_file() or not cfg_path.is_file() or cfg_path.read_text() != config_text:
        return
    run = RunDir(stage.run_dir)
    summary = run.summary()
    if summary is not None and summary.get("base_fingerprint") != base_fingerprint(base):
        return
    status = FINISHED if run.completed else TRAINING
    atomic_write_json(stage.record, {"cache_key": stage.key, "status": status})


def evaluate_method(target: str, data: Path, limit: int, files: EvalFiles, model_key: str = "",
                    scorer: str | None = None, earlier: EvalFiles | None = None) -> dict:
    """Score a run directory (or the untuned base) on the test split into `files` (the eval layout, tunewise.rundir);
    reused for the same model (`model_key`, e.g. the base's fingerprint), test examples, limit and scorer, while a
    built-in scorer still heads its metrics the same way (a cache written before a scorer changed its primary is
    scored again). `earlier`: where an older compare kept it, reused (and moved to `files`) on the same terms."""
    key = f"{model_key}:{file_digest(data / 'test.jsonl')}:{limit}" + (f":{scorer}" if scorer else "")
    for cached in (files, earlier):
        summary = _cached_evaluation(cached, key) if cached is not None else None
        if summary is not None:
            if cached is not files:
                _write_evaluation(files, summary, cached.read_predictions())
            return summary
    spec = resolve_data(data=str(data), split="test", limit=limit)
    if scorer:
        spec = apply_overrides(spec, scorer=scorer)
    result = evaluate(load_target(target), spec)
    summary = result.summary() | {"cache_key": key}
    _write_evaluation(files, summary, result.predictions)
    return summary


def _cached_evaluation(files: EvalFiles, key: str) -> dict | None:
    """The summary in `files` when it was scored under `key` with its predictions kept, by a scorer that still
    heads its metrics the same way; else None."""
    if not files.results.is_file() or not files.predictions.is_file():
        return None
    summary = json.loads(files.results.read_text())
    name = summary.get("scorer") or ""
    same_primary = is_custom(name) or (name in SCORERS and summary.get("primary") == SCORERS[name].primary)
    return summary if same_primary and summary.get("cache_key") == key else None


def _write_evaluation(files: EvalFiles, summary: dict, predictions: list[dict]) -> None:
    atomic_write_text(files.predictions, "".join(json.dumps(p) + "\n" for p in predictions))
    atomic_write_json(files.results, summary)  # last: a results file means both are there


def intruders_of(base: str, run_dir: Path) -> dict:
    cached = RunDir(run_dir).analysis_path
    if cached.is_file():
        return json.loads(cached.read_text())
    slim = analyze(base, str(run_dir), k=10, eps=(0.5,)).slim(0.5)
    atomic_write_json(cached, slim)
    return slim


@dataclass
class CompareRow:
    """One method's row: its score and costs as measured (the first seed's costs), with, over its seeds, the mean
    score and its spread. compare.json holds `as_dict()`, key for key; the verdict reads the typed row."""

    method: str
    score: float | None = None
    metric: str | None = None
    metrics: dict[str, float] | None = None
    retention: dict[str, dict] | None = None
    trainable_params: int = 0
    total_params: int = 0
    output_size_mb: float = 0.0
    train_time_s: float = 0.0
    tokens_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    peak_cuda_mb: float | None = None
    final_train_loss: float | None = None
    final_eval_loss: float | None = None
    lr: float | None = None
    steps: int = 0
    guard_events: dict[str, int] = field(default_factory=dict)  # how often each guard acted
    intruders: int | None = None
    run_dir: str = ""
    reused: bool = False
    seeds: int = 1
    scores: list[float | None] = field(default_factory=list)  # each seed's
    run_dirs: list[str] = field(default_factory=list)
    score_sd: float | None = None  # None with one seed; not written when a seed has no score

    def as_dict(self) -> dict:
        row = asdict(self)
        if None in self.scores:
            del row["score_sd"]
        return row

    @classmethod
    def from_dict(cls, row: dict) -> CompareRow:
        """A row read back from compare.json (or written by hand with the keys the verdict reads)."""
        return cls(**{f.name: row[f.name] for f in fields(cls) if f.name in row})


def row_for(method: str, summary: dict, evaluation: dict, intruders: dict | None, run_dir: Path) -> CompareRow:
    """One training's row, from its summary.json, its evaluation and its intruder analysis."""
    events = summary.get("guard_events", [])
    return CompareRow(
        method=method, score=evaluation.get("score"), metric=evaluation.get("primary"),
        metrics=evaluation.get("metrics"), retention=summary.get("retention"),
        trainable_params=summary["trainable_params"], total_params=summary["total_params"],
        output_size_mb=RunDir(run_dir).output_size_mb(), train_time_s=summary["train_time_s"],
        tokens_per_s=summary["tokens_per_s"], peak_rss_mb=summary["peak_rss_mb"],
        peak_cuda_mb=summary.get("peak_cuda_mb"), final_train_loss=summary["final_train_loss"],
        final_eval_loss=summary["final_eval_loss"], lr=summary["lr"], steps=summary["steps"],
        guard_events={g: sum(1 for e in events if e["guard"] == g) for g in sorted({e["guard"] for e in events})},
        intruders=intruders["total"] if intruders else None, run_dir=str(run_dir),
        reused=bool(summary.get("reused")), scores=[evaluation.get("score")], run_dirs=[str(run_dir)],
    )


def method_lr(spec: CompareSpec, method: str, n_params: int, encoder: bool) -> tuple[float, str]:
    """(lr, note): the one given with --lr, else the size default (tunewise.defaults, as train and advise)."""
    return (spec.lr[method], "given") if method in spec.lr else default_lr(method, n_params, encoder)


def run_compare(spec: CompareSpec, quiet: bool = False, log=print) -> dict:
    check_spec(spec)
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(spec, out)
    labels = encoder_labels(spec.base, data)
    task = "sequence-classification" if labels else "causal-lm"
    n_params = parameter_count(spec.base, task, len(labels) if labels else None)
    seq_len = sequence_length(spec, data, labels, log)
    rows, lr_notes, records = {}, {}, {}
    for method in spec.methods:
        lr, lr_notes[method] = method_lr(spec, method, n_params, bool(labels))
        rows[method], records[method] = run_method(spec, method, data, out, lr, quiet, labels, seq_len, log)
    t0 = time.time()
    base_files = (EvalFiles(out / "base"), EvalFiles(out / "base", LEGACY_EVAL))  # the layout, then the old one
    base_eval = None if labels else evaluate_method(spec.base, data, spec.eval_size, base_files[0],
                                                    base_fingerprint(spec.base), spec.scorer, base_files[1])
    if base_eval:
        log(f"untuned base: scored {base_eval['n']} examples ({time.time() - t0:.0f}s)")
    metric = next(iter(rows.values())).metric
    base_row = {"score": (base_eval["metrics"] or {}).get(metric), "metric": metric} if base_eval else None
    base_score = base_row["score"] if base_row else None
    result = {"spec": spec.model_dump(), "kind": spec.kind, "data": str(data), "base_params": n_params,
              "base": base_row, "max_seq_len": seq_len, "lr_notes": lr_notes,
              "rows": {m: row.as_dict() for m, row in rows.items()},
              "verdict": verdict(rows, spec.kind, base_score, str(data / "train.jsonl"), records),
              "advice": _advice(spec), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_json(out / "compare.json", result)
    return result


def run_method(spec: CompareSpec, method: str, data: Path, out: Path, lr: float, quiet: bool,
               labels: list[str] | None, seq_len: int, log=print) -> tuple[CompareRow, list[list[dict]]]:
    """Train, score and analyse one method once per seed; its row (the seeds' mean and spread) and each seed's
    per-example records (the band's input). Each phase's time is said on its own."""
    rows, records = [], []
    for k in range(spec.seeds):
        label = trial_label(method, k)
        run_dir = out / "runs" / label
        t0 = time.time()
        summary = train_method(spec, method, data, out, lr, quiet, labels, k, seq_len)
        t1 = time.time()
        run = RunDir(run_dir)
        evaluation = evaluate_method(str(run_dir), data, spec.eval_size, run.eval_files(COMPARE_EVAL),
                                     scorer=spec.scorer, earlier=run.legacy_compare_eval())
        t2 = time.time()
        intruders = intruders_of(spec.base, run_dir) if spec.analyze and not labels else None
        trained = ("reused finished run" if summary.get("reused") else
                   f"trained {summary['train_time_s']:.0f}s, with probes and saving {t1 - t0:.0f}s")
        log(f"{label}: {trained}; scored {evaluation['n']} test examples {t2 - t1:.0f}s"
            + (f"; intruder analysis {time.time() - t2:.0f}s" if intruders is not None else ""))
        cut = (summary.get("examples") or {}).get("truncated", 0)
        if cut:
            log(f"{label}: {cut} training examples were cut to max_seq_len {seq_len}")
        rows.append(row_for(method, summary, evaluation, intruders, run_dir))
        records.append(run.eval_files(COMPARE_EVAL).read_predictions())
    return seeds_row(rows), records


def seeds_row(rows: list[CompareRow]) -> CompareRow:
    """One method's row over its seeds: the first seed's costs, the seeds' mean score and its spread."""
    scores = [r.score for r in rows]
    row = replace(rows[0], seeds=len(rows), scores=scores, run_dirs=[r.run_dir for r in rows])
    if None not in scores:
        row.score = statistics.fmean(scores)
        row.score_sd = statistics.stdev(scores) if len(scores) > 1 else None
    return row


def _advice(spec: CompareSpec) -> dict | None:
    """What `tunewise advise` says for this task and model, for the report's 'advice that led here'."""
    try:
        return advise(AdviseInput(task=advise_task_of(spec.task, spec.kind), model=spec.base, device="cpu")).as_dict()
    except TunewiseError as e:
        return {"error": e.message}


# ---------------------------------------------------------------------------------------------- verdict


def verdict(rows: dict[str, CompareRow], kind: str, base_score: float | None = None, train_file: str = "train.jsonl",
            records: dict[str, list[list[dict]]] | None = None) -> dict:
    """The framework's call from the measured rows, each method's per-example records (one list per seed) and
    the untuned base's score; the call itself is tunewise.decide's (pure: numbers in, sentences out)."""
    lines: list[str] = []
    scores = [r.score for r in rows.values() if r.score is not None]
    if base_score is not None and scores and max(scores) <= base_score:
        lines.append(f"No method beats the untuned base ({base_score:.3g}) at this budget, so the rest of this "
                     "verdict says little yet: train longer or on more data before choosing.")
    adapter = rows.get("lora") or rows.get("qlora")
    full = rows.get("full")
    call = None
    if adapter and full:
        call = method_call(adapter, full, kind, records or {})
        mem = adapter.peak_rss_mb / full.peak_rss_mb
        lines.append((call.sentence if call else f"{method_name(adapter.method)} and full fine-tuning have no "
                      "per-example scores to band their gap: undecided") +
                     f" ({method_name(adapter.method)} used {mem:.0%} of full fine-tuning's peak memory).")
    if rows.get("lora") and rows.get("qlora"):
        lines.append(_qlora_line(rows["lora"], rows["qlora"], records or {}))
    if adapter and full and adapter.intruders is not None and full.intruders is not None:
        lines.append(f"Intruder dimensions (top-10, eps 0.5): {adapter.method} {adapter.intruders}, "
                     f"full {full.intruders}.")
    worst = _worst_forgetting(rows, train_file)
    if worst:
        lines.append(worst)
    first = adapter or full
    recommendation = call.recommendation if call else (first.method if first else None)
    return verdict_record(call, recommendation, lines)


def verdict_record(call: Call | None, recommendation: str | None, lines: list[str]) -> dict:
    """compare.json's verdict: the call's typed fields at the top, its words below."""
    fields = {k: None for k in ("call", "gap_points", "band_points", "examples", "seeds", "needed_examples",
                                "needed_seeds")}
    if call is not None:
        fields |= {k: v for k, v in call.as_dict().items() if k in fields}
    return fields | {"recommendation": recommendation, "lines": lines, "text": " ".join(lines)}


def method_call(cheaper: CompareRow, costlier: CompareRow, kind: str, records: dict[str, list[list[dict]]]) -> Call | None:
    """tunewise.decide's call between two rows, from their per-example records; None without them."""
    a, b = records.get(cheaper.method), records.get(costlier.method)
    if not a or not b:
        return None
    primary = cheaper.metric
    band = measure_gap(scores_from_records(a, primary), scores_from_records(b, primary))
    return make_call(band, cheaper.method, costlier.method, kind)


def _qlora_line(lora: CompareRow, qlora: CompareRow, records: dict[str, list[list[dict]]]) -> str:
    mem = 1 - qlora.peak_rss_mb / lora.peak_rss_mb
    slower = qlora.train_time_s / max(lora.train_time_s, 1e-9) - 1
    memory = f"{mem:.0%} less" if mem >= 0 else f"{-mem:.0%} more"
    time_ = f"{slower:.0%} more" if slower >= 0 else f"{-slower:.0%} less"
    call = method_call(lora, qlora, "other", records)
    if call is not None:
        low, high = call.band_points
        score = f"scoring {call.gap_points:+.1f} points [{low:+.1f}, {high:+.1f}]" + (
            "" if low > 0 or high < 0 else ", a difference its band cannot tell from zero")
    else:
        score = f"scoring {100 * ((qlora.score or 0) - (lora.score or 0)):+.1f} points"
    return (f"QLoRA used {memory} peak memory and {time_} time than LoRA, {score} (the seed: about 33% less "
            "memory for about 39% more time on GPU).")


def _worst_forgetting(rows: dict[str, CompareRow], train_file: str = "train.jsonl") -> str | None:
    worst = None
    for method, row in rows.items():
        for probe, c in (row.retention or {}).items():
            worse_by = RetentionChange.from_dict(c).worse_by
            if worse_by is not None and (worst is None or worse_by > worst[0]):
                worst = (worse_by, method, probe)
    if worst and worst[0] > 0.05:
        return (f"Largest loss of a base skill: {worst[1]} on '{worst[2]}' ({worst[0]:.0%} worse); mix examples of "
                f"that skill into the training data to preserve it: {mix_config_line(train_file, worst[2])}")
    return None
