"""Orchestration of a training run: run directory, data, model, retention probes, loop, outputs, summary.

matplotlib is imported only when the loss plot is drawn.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from tunewise import progress, rundir
from tunewise.config import RunConfig, dump_config
from tunewise.data.formats import DataStats, Example, load_classification
from tunewise.data.loading import eval_source, load_eval, load_train
from tunewise.data.schema import check_schema
from tunewise.errors import TunewiseError
from tunewise.evaluate.retention import retention_change, run_probes
from tunewise.fileio import atomic_save_figure, atomic_write_json, atomic_write_text, replace_dir, sha256_file
from tunewise.models import base_fingerprint, check_tokenizer_fits, count_parameters, load_tokenizer
from tunewise.results import TrainSummary, retention_dropped
from tunewise.rundir import CONFIG, LOSS_PLOT, RunDir
from tunewise.train import distributed, fsdp, trackers
from tunewise.train.guards import config_warnings
from tunewise.train.loop import Loop, LoopResult, peak_rss_mb
from tunewise.train.methods import get_method, trainable_token_ids
from tunewise.train.packing import pack
from tunewise.userfiles import read_json_file


@dataclass
class TrainResult:
    run_dir: Path
    summary: TrainSummary | None  # None on a DDP process other than the main one
    exit_code: int = 0


@dataclass
class Data:
    train: list[Example]
    eval: list[Example] | None
    stats: DataStats
    labels: list[str] | None = None


def default_run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir or f"runs/{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}")


def load_data(cfg: RunConfig, tokenizer) -> Data:
    d = cfg.data
    if d.check:
        for src in d.sources():
            if src.path is not None:
                _refuse_schema_errors(src.path, d.format, src.split or d.split, src.columns or d.columns)
    if cfg.task_type == "sequence-classification":
        if len(d.sources()) > 1 or d.sources()[0].path is None:
            raise TunewiseError("sequence classification trains on one data source",
                                "give data.train as one path")
        src = d.sources()[0]
        split, columns = src.split or d.split, src.columns or d.columns
        train_set, stats, labels = load_classification(src.path, tokenizer, d.max_seq_len, None, split, columns)
        ev = eval_source(d)
        eval_set = load_classification(ev.path, tokenizer, d.max_seq_len, labels, ev.split,
                                       ev.columns)[0] if ev else None
        if len(labels) != cfg.num_labels:
            raise TunewiseError(f"{src.path}: {len(labels)} distinct labels {labels} but num_labels is "
                                f"{cfg.num_labels}", f"set num_labels: {len(labels)}")
        return Data(train_set, eval_set, stats, labels)
    train_set, stats = load_train(d, tokenizer, cfg.train.seed)
    if d.packing:
        train_set = pack(train_set, d.max_seq_len)
    return Data(train_set, load_eval(d, tokenizer), stats)


def _refuse_schema_errors(path: str, fmt: str = "auto", split: str = "train",
                          columns: dict[str, str] | None = None) -> None:
    """Run the data audit's schema part first; a dataset with errors is refused (data.check: false overrides)."""
    errors = [p for p in check_schema(path, fmt=fmt, split=split, columns=columns) if p.severity == "error"]
    if errors:
        shown = "\n".join(f"  {p}" for p in errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise TunewiseError(f"{path}: {len(errors)} schema error(s):\n{shown}{more}",
                            f"fix them (`tunewise data check {path} --fix clean.jsonl`) or set data.check: false")


def _retention(cfg: RunConfig, model, tokenizer, is_base: bool) -> dict | None:
    if not cfg.preserve.probes:
        return None
    was_training = model.training
    scores = run_probes(model, tokenizer, cfg.preserve.probes, cfg.preserve.limit, base=cfg.base, is_base=is_base)
    model.train(was_training)
    return scores


def train(cfg: RunConfig, run_dir: str | Path | None = None, resume: bool = False, quiet: bool = False,
          stop_at_step: int | None = None, force: bool = False) -> TrainResult:
    """Train per `cfg`; with resume=True continue the run in `run_dir` from its latest complete checkpoint (refused
    when its data or base changed since it started, unless force=True). The main process holds the run folder's
    write lock throughout (a second writer is refused)."""
    t_start = time.time()
    cfg, ctx, sharded = _init_processes(cfg)
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    if ctx.is_main:
        trackers.require(cfg.train.report_to)  # a missing library is named before anything is written
    lock = rundir.writing(run_dir, "tunewise train" + (" --resume" if resume else ""), create=not resume) \
        if ctx.is_main else contextlib.nullcontext()
    with lock, progress.quiet(quiet or not ctx.is_main):  # the probes' and scoring bars too
        return _train(cfg, ctx, sharded, run_dir, (resume, force), quiet, stop_at_step, t_start)


def _train(cfg: RunConfig, ctx, sharded: bool, run_dir: Path, resuming: tuple[bool, bool], quiet: bool,
           stop_at_step: int | None, t_start: float) -> TrainResult:
    method = get_method(cfg.method)
    resume, force = resuming
    if ctx.is_main:
        _prepare_run_dir(run_dir, cfg, resume, force)
    ctx.barrier()

    cfg, tokenizer, data, model = _load_model_and_data(cfg, method)
    if ctx.is_main and not resume:  # the run records what it trains with (lr etc. after the size defaults)
        atomic_write_text(RunDir(run_dir).config_path, dump_config(cfg))
    before = _retention(cfg, model, tokenizer, is_base=True) if ctx.is_main and not resume else None
    torch.manual_seed(cfg.train.seed)  # adapter init does not depend on whether probes ran
    model = method.prepare(model, cfg, trainable_token_ids(cfg, tokenizer, data.train))
    if sharded:
        model = fsdp.shard(model, ctx)  # before the optimizer exists: it must see the sharded parameters

    loop = Loop(cfg, method, model, data.train, data.eval, run_dir, ctx, tokenizer.pad_token_id, quiet)
    warnings = config_warnings(cfg, cfg.lr, loop.plan.epochs)
    if resume:
        loop.resume()
        before = _load_json(RunDir(run_dir).retention_before_path)
    elif ctx.is_main and before is not None:
        atomic_write_json(RunDir(run_dir).retention_before_path, before)
    loop.trackers = trackers.open_trackers(cfg.train.report_to, run_dir, ctx.is_main,
                                           loop.state.step if resume else None)
    loop.trackers.config(cfg.model_dump(mode="json"))
    if ctx.is_main:
        _announce(cfg, method, loop, data, warnings, quiet)
    loop.model = distributed.wrap(model, ctx)
    try:
        result = loop.run(stop_at_step)
    except BaseException:
        loop.trackers.close("failed")
        raise
    identical = distributed.ranks_identical(loop.params, ctx) if ctx.enabled and not sharded else None
    gathered = fsdp.gather_for_save(loop.model, method.name) if sharded and result.status != "stopped_at_step" \
        else None
    rss_per_rank = distributed.gather_floats(ctx, peak_rss_mb())
    summary = None
    if ctx.is_main:
        summary = _finish_main(cfg, method, loop, result, data, tokenizer, run_dir, gathered, warnings, before,
                               t_start)
        if identical is not None:
            summary.ddp_ranks_identical = identical
        summary.distributed = cfg.train.distributed if ctx.enabled else None
        summary.peak_rss_mb_per_rank = [round(x, 1) for x in rss_per_rank]
        atomic_write_json(RunDir(run_dir).summary_path, summary.as_dict())
        _plot_losses(run_dir)
        loop.trackers.finish(summary.as_dict())
    ctx.barrier()
    distributed.shutdown(ctx)
    exit_code = 1 if summary is not None and summary.retention_failed else 0
    return TrainResult(run_dir, summary, exit_code)


def _load_model_and_data(cfg: RunConfig, method):
    """(cfg with the size defaults for this model, tokenizer, data, the loaded base, labels named)."""
    torch.manual_seed(cfg.train.seed)
    tokenizer = load_tokenizer(cfg.base)
    data = load_data(cfg, tokenizer)
    model = method.load(cfg)
    check_tokenizer_fits(model, tokenizer, cfg.base)
    cfg = cfg.with_size_defaults(count_parameters(model))
    if data.labels:
        model.config.id2label = dict(enumerate(data.labels))
        model.config.label2id = {name: i for i, name in enumerate(data.labels)}
    return cfg, tokenizer, data, model


def _init_processes(cfg: RunConfig):
    """(cfg with this rank's device, the distributed context, whether parameters are sharded with FSDP)."""
    device_type = "cuda" if cfg.train.device.startswith("cuda") or (
        cfg.train.device == "auto" and torch.cuda.is_available()) else "cpu"
    ctx = distributed.init_from_env(device_type)
    sharded = ctx.enabled and cfg.train.distributed == "fsdp"
    if sharded:
        fsdp.check_supported(cfg)
    if ctx.enabled and device_type == "cuda":
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": f"cuda:{ctx.local_rank}"})})
    return cfg, ctx, sharded


def _finish_main(cfg: RunConfig, method, loop, result, data, tokenizer, run_dir: Path, gathered, warnings,
                 before, t_start: float) -> dict:
    """On the main process: the output (the best step's with keep_best) saved, retention after, the summary."""
    model = distributed.unwrap(loop.model)
    if loop.best is not None and loop.best.step is not None:  # keep_best: the output is the best step's
        method.load_trainable_state(model, loop.best.weights())
    if result.status != "stopped_at_step":
        _save_outputs(method, model, tokenizer, run_dir, data.labels, gathered)
    after = _retention(cfg, model, tokenizer, is_base=False) if before is not None and result.status != "stopped_at_step" else None
    return _summary(cfg, loop, result, data, warnings, before, after, time.time() - t_start)


def _prepare_run_dir(run_dir: Path, cfg: RunConfig, resume: bool, force: bool = False) -> None:
    run = RunDir(run_dir)
    if resume:
        if not run.config_path.is_file():
            raise TunewiseError(f"'{run_dir}' is not a run directory (no {CONFIG})", "pass the folder train wrote")
        _check_inputs(run, cfg, force)
        return
    if run.summary_path.exists() or run.checkpoints.exists():
        raise TunewiseError(f"run directory '{run_dir}' already holds a run",
                            f"use --resume {run_dir} to continue it, or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config_path, dump_config(cfg))
    atomic_write_json(run.inputs_path, input_digests(cfg))
    run.metrics_path.unlink(missing_ok=True)


def input_digests(cfg: RunConfig) -> dict:
    """What a run learns from, as digests: each data file or folder (sha256 of its bytes; a dataset id as its
    name), the data section as configured, and the base's fingerprint."""
    sources = [*cfg.data.sources(), *([ev] if (ev := eval_source(cfg.data)) else [])]
    return {"base": cfg.base, "base_fingerprint": base_fingerprint(cfg.base),
            "data_config": cfg.data.model_dump(mode="json"),
            "data": {src.path: _path_digest(src.path) for src in sources if src.path is not None}}


def _path_digest(path: str) -> str:
    p = Path(path).expanduser()
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        digest = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            digest.update(f"{f.relative_to(p)}:{sha256_file(f)}\n".encode())
        return digest.hexdigest()
    return f"not a local path: {path}"  # a dataset id: its name is all there is to compare


def changed_inputs(recorded: dict, now: dict) -> list[str]:
    """What differs between two `input_digests`, one phrase each."""
    changes = []
    if recorded.get("base_fingerprint") != now["base_fingerprint"]:
        changes.append(f"base {now['base']}: its files changed")
    old_cfg, new_cfg = recorded.get("data_config") or {}, now["data_config"]
    changes += [f"data.{k}: {old_cfg.get(k)!r} -> {new_cfg.get(k)!r}" for k in sorted({*old_cfg, *new_cfg})
                if old_cfg.get(k) != new_cfg.get(k)]
    old_data, new_data = recorded.get("data") or {}, now["data"]
    changes += [f"{path}: its content changed" for path in sorted(set(old_data) & set(new_data))
                if old_data[path] != new_data[path]]
    return changes


def _check_inputs(run: RunDir, cfg: RunConfig, force: bool) -> None:
    """Refuse to resume on other data or another base than the run started with; with force, say what changed
    and record the new inputs."""
    if not run.inputs_path.is_file():
        return  # a run from before inputs.json: nothing to compare against
    recorded, now = read_json_file(run.inputs_path, "run inputs"), input_digests(cfg)
    changes = changed_inputs(recorded if isinstance(recorded, dict) else {}, now)
    if not changes:
        return
    if not force:
        raise TunewiseError(f"--resume {run.path}: the run's inputs changed since it started: {'; '.join(changes)}",
                            "resume with the inputs it started from, start a new run with --out, or pass --force "
                            "to continue on the changed inputs")
    tqdm.write(f"warning: resuming {run.path} on changed inputs (--force): {'; '.join(changes)}")
    atomic_write_json(run.inputs_path, {**now, "changed_on_resume": [*recorded.get("changed_on_resume", []),
                                                                     *changes]})


def _announce(cfg, method, loop, data, warnings, quiet) -> None:
    if quiet:
        return
    trainable = sum(p.numel() for p in loop.params)
    total = count_parameters(distributed.unwrap(loop.model))
    tqdm.write(f"tunewise train: {method.name} on {cfg.base}: {trainable:,} trainable of {total:,} parameters "
               f"({100 * trainable / max(total, 1):.2f}%), lr {cfg.lr:g}, {loop.plan.total_steps} steps "
               f"({loop.plan.epochs:.2f} epochs) over {data.stats.used} examples")
    s = data.stats
    if cfg.data.packing:
        tqdm.write(f"data: {s.used} examples packed into {len(data.train)} rows of up to {cfg.data.max_seq_len} tokens")
    if s.sources:
        tqdm.write("data mix: " + ", ".join(f"{name} {n}" for name, n in s.sources.items()))
    if s.truncated or s.dropped_overlong or s.dropped_no_labels:
        tqdm.write(f"data: {s.truncated} truncated, {s.dropped_overlong} dropped as too long, "
                   f"{s.dropped_no_labels} dropped with nothing to learn (of {s.records})")
    for w in warnings:
        tqdm.write(f"[guard:{w.guard}] {w.message}")


def _save_outputs(method, model, tokenizer, run_dir: Path, labels: list[str] | None,
                  state_dict: dict | None = None) -> None:
    """`state_dict`: the gathered weights of a sharded model (its own parameters are only this rank's shards)."""
    final = RunDir(run_dir).output_for(method.output_name)
    tmp = run_dir / f".{method.output_name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    if state_dict is None:
        method.save(model, tmp)
    else:
        model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(str(tmp))
    if labels:
        atomic_write_json(tmp / "labels.json", labels)
    replace_dir(tmp, final)


def _summary(cfg, loop: Loop, result: LoopResult, data: Data, warnings, before, after,
             wall: float) -> TrainSummary:
    final_train = _tail_mean(result.train_losses)
    final_eval = result.eval_losses[-1][1] if result.eval_losses else None
    summary = TrainSummary(
        method=cfg.method, base=cfg.base, base_fingerprint=base_fingerprint(cfg.base), status=result.status,
        trainable_params=sum(p.numel() for p in loop.params),
        total_params=count_parameters(distributed.unwrap(loop.model)),
        steps=loop.state.step, planned_steps=loop.plan.total_steps, epochs=round(loop.plan.epochs, 3),
        lr=cfg.lr, wall_time_s=round(wall, 2), train_time_s=round(result.train_seconds, 2),
        tokens=loop.state.tokens, tokens_per_s=round(loop.state.tokens / max(result.train_seconds, 1e-9), 1),
        peak_rss_mb=round(peak_rss_mb(), 1),
        peak_cuda_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        final_train_loss=final_train, final_eval_loss=final_eval, eval_losses=result.eval_losses,
        train_eval_gap=round(final_eval - final_train, 4) if final_eval is not None and final_train is not None
        else None,
        guard_events=[e.as_dict() for e in warnings + result.events], overfit_marked=loop.guards.overfit_fired,
        examples=data.stats.as_dict(), output=str(RunDir(loop.run_dir).output_for(loop.method.output_name)),
        world_size=loop.ctx.world)
    if loop.best is not None:
        summary.best_step, summary.best_eval_loss = loop.best.step, loop.best.loss
    if before is not None and after is not None:
        for key, value in retention_summary(before, after, cfg.preserve).items():
            setattr(summary, key, value)
        atomic_write_json(RunDir(loop.run_dir).retention_path, summary.retention)
    return summary


def retention_summary(before: dict, after: dict, preserve) -> dict:
    """summary.json's retention, retention_dropped and retention_failed, from one decision per probe (each
    change's `dropped`, at preserve.max_drop), so the per-probe flag and the list cannot disagree."""
    change = retention_change(before, after, preserve.max_drop)
    dropped = retention_dropped(change)
    return {"retention": {name: c.as_dict() for name, c in change.items()}, "retention_dropped": dropped,
            "retention_failed": bool(dropped) and preserve.action == "fail"}


def _tail_mean(values: list[float], n: int = 10) -> float | None:
    tail = values[-n:]
    return round(sum(tail) / len(tail), 6) if tail else None


def _load_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _plot_losses(run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = RunDir(run_dir).metrics()
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.axhline(0.2, ls="--", c="grey", lw=0.8, label="overfitting threshold (0.2)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    atomic_save_figure(fig, RunDir(run_dir).path / LOSS_PLOT)
