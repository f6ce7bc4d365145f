"""Executes one step of the study plan through tunewise's own CLI, so every row's command is one a user can type.

Each step lives in OUT/runs/<run id>/ and ends with a `result.json`; a step whose result.json holds the same
settings is reused, never retrained (re-running the study after it finished only rewrites the tables). A step
interrupted before its result.json starts again from scratch (the runs are minutes long).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import yaml
from study_plan import SWEEP_TASK, BaseEval, ContinualRun, LossOf, Run, Step, run_id, sweep_grid

from tunewise.fileio import atomic_write_json, atomic_write_text
from tunewise.tasks.probes import default_probes

VALIDATION_SIZE = 40
EVAL_ROWS = 40  # rows the engine decodes at once (the first pass's measured setting), whatever the test size
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


class NotReady(Exception):
    """A step that needs results the study does not have yet (the lr sweep)."""


def sh(cmd: list[str]) -> tuple[str, float]:
    """Run a tunewise command; its stdout, and the wall seconds it took. A failure stops the study loudly."""
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:  # the study's configs keep preserve.action at warn, so 1 is a crash, not a drop
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout, round(time.time() - t0, 1)


def tw(*args: str) -> list[str]:
    return [sys.executable, "-m", "tunewise", *args]


def shown(cmd: list[str], root: Path) -> str:
    """The command as a user types it from the repository root."""
    words = ["tunewise", *cmd[3:]] if cmd[:3] == [sys.executable, "-m", "tunewise"] else cmd
    return " ".join(os.path.relpath(w, root) if w.startswith(str(root)) else w for w in words)


def data_folder(out: Path, task: str, seed: int, train_size: int, eval_size: int, noise: float = 0.0) -> Path:
    return out / "data" / (f"{task}-n{train_size}-t{eval_size}-s{seed}" + (f"-noise{noise:g}" if noise else ""))


def task_data(task: str, seed: int, train_size: int, eval_size: int, out: Path, base: str,
              noise: float = 0.0) -> tuple[Path, list[str]]:
    """The task's files for this size and seed (made once, shared by every step that needs them)."""
    folder = data_folder(out, task, seed, train_size, eval_size, noise)
    cmd = tw("tasks", "make", task, "--out", str(folder), "--train", str(train_size), "--validation",
             str(VALIDATION_SIZE), "--test", str(eval_size), "--seed", str(seed), "--base", base,
             *(["--noise", f"{noise:g}"] if noise else []))
    if not (folder / "meta.json").is_file():
        sh(cmd)
    return folder, cmd


def test_data(run: Run, out: Path, base: str) -> tuple[Path, list[str]]:
    """The task folder a run trains from (or selects from) and is scored on, and the command that made it."""
    from study_plan import CURATED_NOISE

    if run.data == "clean":
        return task_data(run.task, run.seed, run.train_size, run.eval_size, out, base)
    n = run.train_size if run.data == "noisy" else 5 * run.train_size
    return task_data(run.task, run.seed, n, run.eval_size, out, base, CURATED_NOISE)


def run_data(run: Run, out: Path, base: str, folder: Path) -> tuple[Path, Path, list[list[str]]]:
    """(the task folder to score on, the training file, the commands that made them). Claim 11's variants all
    come from one noisy set of 5N records (`tasks make --noise`): all of it, `data select --k N` of it, or a
    random N of it; validation and test are the task's clean splits."""
    data, make = test_data(run, out, base)
    if run.data in ("clean", "noisy"):
        return data, data / "train.jsonl", [make]
    train = folder / "train.jsonl"
    if run.data == "random":
        lines = (data / "train.jsonl").read_text().splitlines(keepends=True)
        keep = sorted(random.Random(run.seed).sample(range(len(lines)), run.train_size))  # file order kept
        atomic_write_text(train, "".join(lines[i] for i in keep))
        return data, train, [make]
    select = tw("data", "select", str(data / "train.jsonl"), "--k", str(run.train_size), "--base", base,
                "--out", str(train), "--json")
    sh(select)
    return data, train, [make, select]


def sweep_loss_of(results: dict[str, dict]) -> LossOf:
    """(method, lr) -> the final validation loss of that sweep run, None while it has not run."""
    def loss_of(method: str, lr: float) -> float | None:
        res = results.get(run_id(Run(SWEEP_TASK, method, lr)))
        return None if res is None else res["summary"]["final_eval_loss"]
    return loss_of


def best_lr(method: str, results: dict[str, dict]) -> float:
    """The sweep's lr with the lowest final validation loss for this method (QLoRA uses LoRA's sweep)."""
    method = "lora" if method == "qlora" else method
    loss_of = sweep_loss_of(results)
    grid = sweep_grid(method, loss_of)
    losses = {lr: loss_of(method, lr) for lr in grid}
    if None in losses.values():
        raise NotReady(f"the {method} lr sweep is not finished")
    return min(grid, key=lambda lr: losses[lr])


def resolve(step: Step, results: dict[str, dict]) -> Step:
    if isinstance(step, Run) and step.lr == "sweep":
        return replace(step, lr=best_lr(step.method, results))
    if isinstance(step, ContinualRun) and "sweep" in (step.lora_lr, step.full_lr):
        return replace(step, lora_lr=best_lr("lora", results), full_lr=best_lr("full", results))
    return step


def train_config(run: Run, base: str, data: Path, train_file: Path | None = None) -> dict:
    train = {"epochs": run.epochs, "batch_size": run.batch_size, "lr": run.lr, "seed": run.seed, "log_every": 1}
    if run.eval_every:
        train["eval_every"] = run.eval_every
    cfg = {"base": base, "method": run.method,
           "data": {"train": str(train_file or data / "train.jsonl"), "eval": str(data / "validation.jsonl"),
                    "max_seq_len": 160},
           "train": train, "preserve": {"probes": default_probes(base) if run.retention else [], "limit": 48}}
    if run.method != "full":
        cfg["lora"] = {"r": run.r} | ({"alpha": run.alpha} if run.alpha is not None else {})
    return cfg


def scorer_flag(scorer: str | None) -> list[str]:
    """`--scorer NAME` for the study's evals (none: each task's own scorer)."""
    return ["--scorer", scorer] if scorer else []


def execute(step: Step, base: str, out: Path, root: Path, scorer: str | None = None) -> dict:
    """Run one step; its result records the scorer its evals used (None: each task's own)."""
    folder = out / "runs" / run_id(step)
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted step (no result.json): start it again
    folder.mkdir(parents=True)
    load = os.getloadavg()[0]
    if isinstance(step, Run):
        result = _train_step(step, base, out, folder, root, scorer)
    elif isinstance(step, BaseEval):
        data, make = task_data(step.task, step.seed, 240, step.eval_size, out, base)
        scored, cmd, secs = score(base, data, step.eval_size, folder / "eval", scorer)
        result = scored | {"wall_s": {"eval": secs}, "commands": [shown(make, root), shown(cmd, root)]}
    else:
        result = _continual_step(step, base, folder, root)
    return {"id": run_id(step), "step": asdict(step), "scorer": scorer, "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2), **result}


def score(model: str, data: Path, eval_size: int, out: Path, scorer: str | None) -> tuple[dict, list[str], float]:
    """`tunewise eval` of a model (the base or a run folder) on a task's test split: ({eval, items}, the command,
    its wall seconds). `items` are each example's (numerator, denominator), the band's input."""
    cmd = tw("eval", model, "--data", str(data), "--limit", str(eval_size), "--batch-size",
             str(min(eval_size, EVAL_ROWS)), "--json", "--out", str(out), *scorer_flag(scorer))
    text, secs = sh(cmd)
    evaluation = json.loads(text)
    return ({"eval": _eval_fields(evaluation), "items": _items(out / "predictions.jsonl", evaluation.get("primary"))},
            cmd, secs)


def _train_step(run: Run, base: str, out: Path, folder: Path, root: Path, scorer: str | None) -> dict:
    data, train_file, made = run_data(run, out, base, folder)
    cfg_path = folder / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(train_config(run, base, data, train_file), sort_keys=False))
    train = tw("train", str(cfg_path), "--out", str(folder / "run"), "-q")
    _, t_train = sh(train)
    summary = json.loads((folder / "run" / "summary.json").read_text())
    scored, ev, t_eval = score(str(folder / "run"), data, run.eval_size, folder / "eval", scorer)
    commands = [*(shown(c, root) for c in made), shown(train, root), shown(ev, root)]
    wall = {"train": t_train, "eval": t_eval}
    result = {"summary": _summary_fields(summary), **scored,
              "train_losses": _train_losses(folder / "run" / "metrics.jsonl")}
    if run.analyze:
        an = tw("analyze", base, str(folder / "run"), "--eps", "0.3,0.5,0.7", "--json")
        text, wall["analyze"] = sh(an)
        commands.append(shown(an, root))
        analysis = json.loads(text)
        result["analysis"] = _analysis_fields(analysis)
        # compare's slim analysis.json beside the run, so `tunewise report` draws the intruders per layer
        a = analysis["results"][0]["summary"]
        atomic_write_json(folder / "run" / "analysis.json",
                          {"total": a["total"]["0.5"], "per_layer": {k: v["0.5"] for k, v in a["per_layer"].items()},
                           "per_module": {k: v["0.5"] for k, v in a["per_module"].items()}})
    return result | {"commands": commands, "wall_s": wall}


def rescorable(step: Step, results: dict[str, dict], out: Path) -> dict | None:
    """A finished training with this step's settings but a smaller test set, whose run folder is still on this
    machine: scoring it on the larger test set costs an eval, not a training (the test split is drawn from its
    own stream, so the larger set begins with the smaller one)."""
    if not isinstance(step, Run):
        return None
    want = json.loads(json.dumps(asdict(step)))
    for res in results.values():
        had = res["step"]
        if (had.get("kind") == "train" and had["eval_size"] < step.eval_size and {**had, "eval_size": step.eval_size}
                == want and (out / "runs" / res["id"] / "run" / "summary.json").is_file()):
            return res
    return None


def rescore(step: Run, old: dict, base: str, out: Path, root: Path, scorer: str | None = None) -> dict:
    """`old`'s training, moved to this step's folder and scored on this step's test set; everything measured
    during training (summary, retention, intruders, losses) is the old run's."""
    folder = out / "runs" / run_id(step)
    if folder.exists():
        shutil.rmtree(folder)
    shutil.move(out / "runs" / old["id"], folder)
    shutil.rmtree(folder / "eval", ignore_errors=True)
    load = os.getloadavg()[0]
    data, make = test_data(step, out, base)
    scored, ev, secs = score(str(folder / "run"), data, step.eval_size, folder / "eval", scorer)
    kept = [c.replace(old["id"], run_id(step)) for c in old["commands"]
            if not c.startswith(("tunewise tasks make", "tunewise eval"))]
    trained = next(i for i, c in enumerate(kept) if c.startswith("tunewise train")) + 1
    commands = [shown(make, root), *kept[:trained], shown(ev, root), *kept[trained:]]
    return old | scored | {"id": run_id(step), "step": asdict(step), "scorer": scorer, "rescored_from": old["id"],
                           "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
                           "wall_s": {**old["wall_s"], "eval": secs}, "commands": commands}


def _continual_step(step: ContinualRun, base: str, folder: Path, root: Path) -> dict:
    methods = [{"method": "lora", "r": 16, "lr": step.lora_lr}, {"method": "full", "lr": step.full_lr}]
    cfg = {"base": base, "tasks": list(step.tasks), "methods": methods, "epochs": step.epochs,
           "batch_size": step.batch_size, "train_size": step.train_size, "eval_size": step.eval_size,
           "seed": step.seed, "out": str(folder / "out")}
    cfg_path = folder / "continual.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = tw("continual", str(cfg_path), "--json", "-q")
    text, secs = sh(cmd)
    return {"continual": json.loads(text[text.index("{"):]), "wall_s": {"continual": secs},
            "commands": [shown(cmd, root)]}


SUMMARY_KEYS = ("method", "trainable_params", "total_params", "steps", "epochs", "lr", "train_time_s", "tokens",
                "tokens_per_s", "peak_rss_mb", "final_train_loss", "final_eval_loss", "eval_losses", "retention",
                "overfit_marked", "guard_events")


def _summary_fields(summary: dict) -> dict:
    return {k: summary.get(k) for k in SUMMARY_KEYS}


def _items(predictions: Path, primary: str | None) -> list[list[float]]:
    """Each test example's (numerator, denominator) of the metric, in the test file's order: the paired band's
    input (tunewise.decide)."""
    from tunewise.decide import item_pair

    rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    return [list(item_pair(r, primary)) for r in rows]


def _eval_fields(ev: dict) -> dict:
    return {k: ev.get(k) for k in ("score", "primary", "metrics", "n")}


def _analysis_fields(an: dict) -> dict:
    s = an["results"][0]["summary"]
    return {"total": s["total"], "matrices": s["matrices"], "matrices_with_intruders": s["matrices_with_intruders"],
            "spectrum": s.get("spectrum")}


def _train_losses(path: Path) -> list[list[float]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [[r["step"], round(r["loss"], 5)] for r in rows if "loss" in r]


def phase_seconds(result: dict) -> dict[str, float]:
    """A finished run's wall seconds per phase, less any time it spent stopped (SIGSTOP) while the machine was lent
    to another measurement; such a run records that time as "paused_s" {phase: seconds} in its result.json."""
    paused = result.get("paused_s", {})
    return {k: v - paused.get(k, 0.0) for k, v in result["wall_s"].items()}


def run_seconds(result: dict) -> float:
    return sum(phase_seconds(result).values())
