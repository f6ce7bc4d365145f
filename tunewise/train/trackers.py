"""A run's config, step metrics, evals, guard events and summary, sent where users already look at runs.

`train.report_to` picks any of TensorBoard (event files from torch.utils.tensorboard), W&B (offline mode unless
WANDB_MODE says otherwise) and MLflow (a file store unless MLFLOW_TRACKING_URI says otherwise). By default each writes
inside the run directory, so nothing needs a server or the network. The loop hands every record it appends to
metrics.jsonl to `Trackers.log`, so the trackers hold exactly the values metrics.jsonl holds. Only rank 0 opens
trackers; other ranks get an empty `Trackers`.

Each tracker's library (tensorboard, wandb, mlflow: the optional tunewise[tracking]) is imported when that tracker
is chosen.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from pathlib import Path
from typing import Protocol

import yaml

from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_json
from tunewise.userfiles import read_json_file

EXTRA = "tracking"
# report_to name -> (the module imported, the pip package that provides it)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow-skinny")}
FINISHED = ("completed", "stopped_by_guard")  # ran to an end it chose; interrupted ones were killed
IDS_FILE = "trackers.json"  # the W&B / MLflow run ids, so a resumed run continues the same tracked run
MLFLOW_URI_KEY = "mlflow_tracking_uri"  # in IDS_FILE: where the MLflow run is, so a resume finds it there


class Tracker(Protocol):
    def config(self, config: dict) -> None: ...
    def log(self, step: int, values: dict[str, float], events: list[dict]) -> None: ...
    def summary(self, summary: dict) -> None: ...
    def close(self, status: str) -> None: ...


def require(names: list[str]) -> None:
    """Import each tracker's library now, before the model loads; a missing one names the extra to install."""
    for name in names:
        module, package = PACKAGES[name]
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise TunewiseError(f"train.report_to: {name} needs the '{package}' package, which is not installed "
                                f"({e})", f"pip install 'tunewise[{EXTRA}]' (or pip install {package}), or "
                                f"remove {name} from train.report_to") from None


def split_record(record: dict) -> tuple[int, dict[str, float], list[dict]]:
    """A metrics.jsonl record -> (step, {train/loss: ..} or {eval/loss: ..}, guard events)."""
    is_eval = any(k.startswith("eval_") for k in record)
    prefix = "eval/" if is_eval else "train/"
    values = {prefix + k.removeprefix("eval_"): float(v) for k, v in record.items()
              if k not in ("step", "events") and isinstance(v, (int, float)) and not isinstance(v, bool)}
    events = list(record.get("events", []))
    for e in events:
        values[f"guard/{e['guard']}"] = 1.0  # a mark on the step's timeline; the message goes to text/summary
    return int(record["step"]), values, events


class Trackers:
    """Fans each call out to every tracker asked for; with none it does nothing."""

    def __init__(self, trackers: list[Tracker] | None = None):
        self.trackers = trackers or []
        self.closed = False

    def config(self, config: dict) -> None:
        for t in self.trackers:
            t.config(config)

    def log(self, record: dict) -> None:
        if self.trackers:
            step, values, events = split_record(record)
            for t in self.trackers:
                t.log(step, values, events)

    def finish(self, summary: dict) -> None:
        for t in self.trackers:
            t.summary(summary)
        self.close(summary.get("status", "completed"))

    def close(self, status: str) -> None:
        """status: the summary's ('completed', 'interrupted', ...) or 'failed'; closing twice does nothing."""
        if self.closed:
            return
        self.closed = True
        for t in self.trackers:
            t.close(status)


def open_trackers(names: list[str], run_dir: Path, is_main: bool, resume_step: int | None = None) -> Trackers:
    """The trackers `names` writing under `run_dir`; resume_step: the checkpoint step a resumed run goes on from."""
    if not names or not is_main:
        return Trackers()
    names = list(dict.fromkeys(names))  # [wandb, wandb] is one W&B run
    require(names)
    ids_path = run_dir / IDS_FILE
    ids = read_json_file(ids_path, "tracker ids file") if resume_step is not None and ids_path.is_file() else {}
    makers = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}
    opened: list[Tracker] = []
    try:
        for name in names:
            extra = {"tracking_uri": ids.get(MLFLOW_URI_KEY)} if name == "mlflow" else {}
            opened.append(makers[name](run_dir, ids.get(name), resume_step, **extra))
    except Exception:
        Trackers(opened).close("failed")
        raise
    record = {n: t.run_id for n, t in zip(names, opened) if getattr(t, "run_id", None)}
    for t in opened:
        if isinstance(t, MlflowTracker):
            record[MLFLOW_URI_KEY] = t.tracking_uri
    atomic_write_json(ids_path, record)
    return Trackers(opened)


def mlflow_tracking_uri(run_dir: Path, recorded: str | None = None) -> str:
    """Where the MLflow run goes: the store a resumed run already uses, else MLFLOW_TRACKING_URI (as MLflow itself
    and Hugging Face's callback read it: a server, a database or a file store of the user's), else a file store
    inside the run folder, which needs no server."""
    return recorded or os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _code_block(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())  # indented = preformatted in TensorBoard's markdown


class TensorBoardTracker:
    """Event files in run_dir/tensorboard (`tensorboard --logdir runs/`)."""

    run_id = None

    def __init__(self, run_dir: Path, _run_id: str | None, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard's readers drop what a killed run logged after the checkpoint it resumes from
        # (and, on a new run, all that an earlier attempt in this folder logged before it died uncheckpointed).
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step is not None else 0)
        self.step = resume_step or 0

    def config(self, config: dict) -> None:
        self.writer.add_text("config", _code_block(yaml.safe_dump(config, sort_keys=False)), 0)

    def log(self, step: int, values: dict[str, float], events: list[dict]) -> None:
        self.step = step
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        for e in events:
            self.writer.add_text(f"guard/{e['guard']}", e["message"], step)
        self.writer.flush()

    def summary(self, summary: dict) -> None:
        self.writer.add_text("summary", _code_block(json.dumps(summary, indent=2, default=str)), self.step)

    def close(self, status: str) -> None:
        self.writer.close()


class WandbTracker:
    """An offline W&B run in run_dir/wandb (`wandb sync run_dir/wandb/offline-run-*` uploads it later)."""

    def __init__(self, run_dir: Path, run_id: str | None, resume_step: int | None):
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "tunewise"), name=run_dir.name, dir=str(run_dir),
            id=run_id, resume="allow" if run_id else None, mode=os.environ.get("WANDB_MODE", "offline"),
            settings=wandb.Settings(silent=True, console="off", disable_git=True, save_code=False))
        self.run_id = self.run.id

    def config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log(self, step: int, values: dict[str, float], events: list[dict]) -> None:
        self.run.log(values, step=step)

    def summary(self, summary: dict) -> None:
        self.run.summary.update(summary)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status in FINISHED else 1)


class MlflowTracker:
    """An MLflow run at MLFLOW_TRACKING_URI, by default in the file store run_dir/mlruns
    (`mlflow ui --backend-store-uri file://.../mlruns`); MLFLOW_EXPERIMENT_NAME names its experiment."""

    def __init__(self, run_dir: Path, run_id: str | None, resume_step: int | None, tracking_uri: str | None = None):
        # MLflow 3 keeps the file store but asks for this opt-in; a store inside the run folder needs no database.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.tracking_uri = mlflow_tracking_uri(run_dir, tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        if run_id:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "tunewise")
            exp = self.client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(name)
            self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
        self.step = resume_step or 0

    def config(self, config: dict) -> None:
        from mlflow.entities import Param

        values = {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in _flat(config).items()}
        logged = self.client.get_run(self.run_id).data.params  # a resumed run logged them once already
        params = [Param(k, v) for k, v in values.items() if k not in logged]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i: i + 100])
        for k, v in values.items():  # params cannot change; what a resume changed (e.g. max_steps) is a tag
            if k in logged and logged[k] != v:
                self.client.set_tag(self.run_id, f"resumed.{k}", v)
        self.client.log_dict(self.run_id, config, "config.json")

    def log(self, step: int, values: dict[str, float], events: list[dict]) -> None:
        from mlflow.entities import Metric

        self.step = step
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def summary(self, summary: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        numbers = [Metric(re.sub(r"[^\w\-. :/]", "_", f"summary/{k}"), float(v), now, self.step)
                   for k, v in _flat(summary).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        self.client.log_batch(self.run_id, metrics=numbers)
        self.client.log_dict(self.run_id, summary, "summary.json")  # guard events and retention, in full
        self.client.set_tag(self.run_id, "status", str(summary.get("status")))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if status in FINISHED else
                                   "FAILED" if status == "failed" else "KILLED")
