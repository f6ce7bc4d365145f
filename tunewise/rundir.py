"""A run directory: what `tunewise train` writes and every other command reads, known in this one place.

    RUN_DIR/config.yaml     the resolved RunConfig the run trained with
            metrics.jsonl   one record per logged step and eval
            summary.json    written when the run ends (completed, interrupted, stopped_at_step)
            checkpoints/    step-N/ folders while it trains (resume)
            adapter/        the output of LoRA / QLoRA (a PEFT adapter folder) ...
            model/          ... or of full fine-tuning (a model folder)
            retention_before.json, retention.json   the probes' scores before training, and the change
            best/           the best checkpoint by eval loss (train.keep_best)
            loss.png, analysis.json
            eval/NAME/      one evaluation: results.json, predictions.jsonl (and retention.json with probes);
                            `tunewise eval RUN` names it after the task or test file, compare `compare`
            inputs.json     digests of the data and the base the run started from (resume checks them)
            .lock           while a process writes the run: who (pid, host, since); see `writing`

`RunDir(path).config()` is the typed config (read with tunewise.config's loader, so a damaged or hand-edited
config.yaml is reported with the file and the field), never a raw YAML dict.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunewise.config import load_run_config
from tunewise.errors import TunewiseError
from tunewise.userfiles import read_json_file

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
OUTPUTS = ("adapter", "model")  # the output folder's name: a PEFT adapter, or a full model
ANALYSIS = "analysis.json"
LOSS_PLOT = "loss.png"
EVAL = "eval"
RESULTS = "results.json"  # an evaluation's summary ...
PREDICTIONS = "predictions.jsonl"  # ... and its per-example records
COMPARE_EVAL = "compare"  # the evaluation compare scores each of its runs with: RUN/eval/compare/
LEGACY_EVAL = "eval.json"  # before: compare's RUN/eval.json beside RUN/predictions.jsonl (still read)
RETENTION_BEFORE = "retention_before.json"
RETENTION = "retention.json"
BEST = "best"
LOCK = ".lock"
INPUTS = "inputs.json"


@dataclass(frozen=True)
class EvalFiles:
    """The files of one evaluation in `folder`: its summary (results.json), one record per example
    (predictions.jsonl) and, when probes ran, retention.json. `tunewise eval` and compare both write this layout;
    `results_name` is only for reading compare's older eval.json."""

    folder: Path
    results_name: str = RESULTS

    @property
    def results(self) -> Path:
        return self.folder / self.results_name

    @property
    def predictions(self) -> Path:
        return self.folder / PREDICTIONS

    @property
    def retention(self) -> Path:
        return self.folder / RETENTION

    def read_predictions(self) -> list[dict]:
        return [json.loads(line) for line in self.predictions.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class RunDir:
    """The layout of one run directory; reading is lazy, the config is read (and checked) once."""

    path: Path
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())

    # ------------------------------------------------------------------ where things are
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def retention_before_path(self) -> Path:
        return self.path / RETENTION_BEFORE

    @property
    def retention_path(self) -> Path:
        return self.path / RETENTION

    @property
    def inputs_path(self) -> Path:
        return self.path / INPUTS

    @property
    def best_dir(self) -> Path:
        return self.path / BEST

    @property
    def analysis_path(self) -> Path:
        return self.path / ANALYSIS

    @property
    def eval_dir(self) -> Path:
        """Where a run's evaluations are, one folder each (eval_files)."""
        return self.path / EVAL

    def eval_files(self, name: str) -> EvalFiles:
        """RUN/eval/NAME: `tunewise eval RUN` writes NAME = the task or test file's name, compare NAME = compare."""
        return EvalFiles(self.eval_dir / name)

    def legacy_compare_eval(self) -> EvalFiles:
        """Where compare kept a run's evaluation before the layout was one (RUN/eval.json, RUN/predictions.jsonl):
        run folders on disk still have it, and compare still reads it."""
        return EvalFiles(self.path, LEGACY_EVAL)

    @property
    def output(self) -> Path | None:
        """The folder the run saved its weights in (adapter/ or model/), None while it has saved none."""
        return next((self.path / name for name in OUTPUTS if (self.path / name).is_dir()), None)

    def output_for(self, name: str) -> Path:
        """Where a run saves its output named `name` (a method's output_name: "adapter" or "model")."""
        if name not in OUTPUTS:
            raise ValueError(f"a run's output is one of {OUTPUTS}, not {name!r}")
        return self.path / name

    # ------------------------------------------------------------------ what it is
    @staticmethod
    def holds_run(path: str | Path) -> bool:
        """A run directory as train writes it: its config.yaml and an output folder."""
        p = Path(path).expanduser()
        return (p / CONFIG).is_file() and any((p / name).is_dir() for name in OUTPUTS)

    @staticmethod
    def started(path: str | Path) -> bool:
        """Train has written into it (config.yaml), whether or not it saved weights yet."""
        return (Path(path).expanduser() / CONFIG).is_file()

    @property
    def resumable(self) -> bool:
        """Interrupted with a checkpoint to continue from (`train --resume`)."""
        return self.config_path.is_file() and self.checkpoints.is_dir()

    # ------------------------------------------------------------------ what it holds
    def config(self):
        """The run's RunConfig; a config.yaml that is damaged or no longer valid is a ConfigError naming it."""
        if "config" not in self._cache:
            if not self.config_path.is_file():
                raise TunewiseError(f"'{self.path}' is not a run directory (no {CONFIG})",
                                    "pass the folder `tunewise train` wrote")
            self._cache["config"] = load_run_config(self.config_path, run_dir_config=True)
        return self._cache["config"]

    def config_text(self) -> str | None:
        """config.yaml as written (for reports), None when there is none."""
        return self.config_path.read_text(encoding="utf-8") if self.config_path.is_file() else None

    def summary(self) -> dict[str, Any] | None:
        """summary.json, None before the run has ended; a damaged one is an error naming the file."""
        if not self.summary_path.is_file():
            return None
        data = read_json_file(self.summary_path, "run summary")
        if not isinstance(data, dict):
            raise TunewiseError(f"{self.summary_path} is damaged (not a JSON object)",
                                "train the run again or restore summary.json")
        return data

    @property
    def status(self) -> str | None:
        """The summary's status ("completed", "interrupted", ...); None when there is no readable summary."""
        try:
            summary = self.summary()
        except TunewiseError:
            return None
        return summary.get("status") if summary else None

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def metrics(self) -> list[dict]:
        """The records of metrics.jsonl, in order ([] when there are none yet)."""
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def output_size_mb(self) -> float:
        """MiB of safetensors in the output folder (what a user would ship)."""
        out = self.output
        return round(sum(f.stat().st_size for f in out.glob("*.safetensors")) / 2**20, 3) if out else 0.0


# ---------------------------------------------------------------------------------------------- one writer


@dataclass(frozen=True)
class Holder:
    """Who holds a run folder's lock."""

    pid: int
    host: str
    since: str
    command: str

    def describe(self) -> str:
        return f"{self.command} (pid {self.pid} on {self.host}, since {self.since})"

    def dead(self) -> bool:
        """True only when the holder certainly no longer runs: on this host, and no process has its pid."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # a process of another user has that pid: alive
            return False
        return False


def lock_holder(path: str | Path) -> Holder | None:
    """The holder recorded in a run folder's lock; None when there is no lock or it cannot be read."""
    try:
        data = json.loads((Path(path) / LOCK).read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), str(data["since"]), str(data.get("command", "?")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _take(lock: Path, me: Holder) -> bool:
    """Create the lock file holding `me`, only if there is none (O_EXCL: of two processes, one wins)."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(me), f)
    return True


def refuse_if_locked(path: str | Path) -> None:
    """Refuse, naming the holder, when a live process holds the folder's lock (a dead holder's lock is stale)."""
    lock = Path(path).expanduser() / LOCK
    if not lock.exists():
        return
    holder = lock_holder(lock.parent)
    if holder is not None and holder.dead():
        return
    who = holder.describe() if holder else f"a process whose lock file {lock} cannot be read"
    raise TunewiseError(f"'{lock.parent}' is being written by {who}",
                        f"wait for it to finish or stop it; if no such process runs, delete {lock}")


@contextlib.contextmanager
def writing(path: str | Path, command: str = "tunewise train", create: bool = True) -> Iterator[Holder]:
    """Hold the run folder's write lock for the block: the folder is created, the lock taken before anything else
    is written, and released on every way out of the block. A second writer is refused naming the holder; a lock
    left by a process that died (same host, pid gone) is taken over."""
    folder = Path(path).expanduser()
    if not create and not folder.is_dir():
        raise TunewiseError(f"'{folder}' is not a run directory (it does not exist)", "pass the folder train wrote")
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK
    me = Holder(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S %Z"), command)
    while not _take(lock, me):
        holder = lock_holder(folder)
        if holder is not None and holder.dead():
            if lock_holder(folder) == holder:  # still that dead holder's: another taker may have won meanwhile
                lock.unlink(missing_ok=True)
            continue
        refuse_if_locked(folder)
    previous = _exit_on_sigterm()
    try:
        yield me
    finally:
        if lock_holder(folder) == me:
            lock.unlink(missing_ok=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm():
    """While a lock is held, SIGTERM (by default an exit that runs no cleanup) ends the process through
    SystemExit, so the lock is released; the training loop installs its own graceful handler over this one.
    Returns the handler to restore, None where nothing was changed (not the main thread, a handler already set)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    return signal.SIG_DFL
