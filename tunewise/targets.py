"""What a model argument names, decided once: a base alias, a hub id, a run directory, a PEFT adapter folder or a
model folder (a classifier among them), as one typed `Target`.

    t = resolve_target("runs/sql-lora")      # Target(kind="run", path=runs/sql-lora/adapter, base="tiny", ...)
    t.is_adapter, t.classifier, t.method     # what eval, merge, export, analyze and serve branch on
    resolve_target("runs/sql-lora", step=40) # the adapter as it was at checkpoint 40 (--step 40)

Only files are read (config.json, adapter_config.json, the run's config.yaml); no model is loaded and no hub is
asked, so resolving is instant and the same everywhere. A checkpoint of an adapter run (`--step N`, or the path
RUN/checkpoints/step-N itself) is written once per process as a PEFT adapter folder in a temporary directory: its
tensors under the keys of the run's final adapter, so every command that loads an adapter loads it unchanged.

safetensors (and torch with it) is imported only where a checkpoint is materialised: resolving any other target
reads small files and stays instant.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tunewise.defaults import BASE_ALIASES as ALIASES
from tunewise.errors import TunewiseError
from tunewise.rundir import RunDir
from tunewise.userfiles import check_weights_file, looks_like_path, read_json_file

Kind = Literal["alias", "hub", "run", "adapter", "model"]
TaskType = Literal["causal-lm", "sequence-classification"]
EXPECTED = ("a run directory (config.yaml with adapter/ or model/), a PEFT adapter folder (adapter_config.json) "
            "or a model folder (config.json)")


@dataclass(frozen=True)
class Target:
    """One resolved model argument.

    kind: what the argument names. `path` is the folder whose weights load: the adapter folder for an adapter (a
    run's adapter/ included), the model folder for a model (a run's model/ included), None for an alias or hub
    id (tunewise.models.resolve_base finds those). `base` is the base an adapter loads onto, or the base a
    run's full model was tuned from; None where nothing says (a bare model folder, a base)."""

    name: str
    kind: Kind
    path: Path | None
    base: str | None = None
    run: RunDir | None = None
    task_type: TaskType = "causal-lm"

    @property
    def is_adapter(self) -> bool:
        return self.path is not None and (self.path / "adapter_config.json").is_file()

    @property
    def is_tuned(self) -> bool:
        """Known to be a fine-tune: a run, an adapter, or a trained classifier's model folder."""
        return self.kind in ("run", "adapter") or self.classifier

    @property
    def classifier(self) -> bool:
        return self.task_type == "sequence-classification"

    @property
    def run_dir(self) -> Path | None:
        return self.run.path if self.run is not None else None

    @property
    def method(self) -> str | None:
        """The run's method (lora, qlora, full); None outside a run directory."""
        return self.run.config().method if self.run is not None else None

    @property
    def weights(self) -> Literal["adapter", "full"]:
        """What loads: an adapter onto its base, or a whole model."""
        return "adapter" if self.is_adapter else "full"

    def model_source(self) -> str:
        """What tunewise.models.load_base loads for a whole model: the folder, or the alias / hub id."""
        return str(self.path) if self.path is not None else self.name


def resolve_target(arg: str | os.PathLike, base: str | None = None, step: int | None = None) -> Target:
    """Say what ARG is. `base` (e.g. --base) wins over the base a run or an adapter names; `step` (--step N) picks
    the adapter of a run's checkpoint N instead of its final one.

    An alias ('tiny') is the alias, as tunewise.models.resolve_base loads it, even where a folder of that name
    exists; a name that is neither an existing path nor written like one ('./x', '/x', 'a/b/c') is a hub id; an
    existing folder must be one of EXPECTED, else the error names what was expected."""
    name = str(arg)
    p = Path(name).expanduser()
    if step is not None:
        return _checkpoint_target(checkpoint_of(p, step), base)
    if _is_checkpoint(p):
        return _checkpoint_target(p, base)
    if name in ALIASES:
        return Target(name, "alias", None)
    if not p.exists():
        if looks_like_path(name):
            raise TunewiseError(f"'{name}' does not exist", f"give {EXPECTED}, a base alias or a hub id")
        return Target(name, "hub", None)
    if p.is_file():
        if p.name == "config.json":  # a model folder's config, as `resolve_base` takes it
            return _model_target(name, p.parent, base)
        raise TunewiseError(f"'{p}' is a file", f"give {EXPECTED}")
    if RunDir.holds_run(p):
        return _run_target(name, RunDir(p), base)
    if (p / "adapter_config.json").is_file():
        return _adapter_target(name, p, base, None)
    if (p / "config.json").is_file():
        return _model_target(name, p, base)
    if RunDir.started(p):
        raise TunewiseError(f"'{p}' is a run directory without adapter/ or model/: the run saved no weights yet",
                            f"let it finish (tunewise train --resume {p}), or give {EXPECTED}")
    raise TunewiseError(f"'{p}' is neither {EXPECTED}", "point at what `tunewise train` wrote, or at a base folder")


def resolve_tuned(arg: str | os.PathLike, base: str | None = None, step: int | None = None) -> Target:
    """A target that holds tuned weights on disk: a run directory, an adapter folder or a model folder."""
    target = resolve_target(arg, base, step)
    if target.kind in ("alias", "hub"):
        raise TunewiseError(f"'{arg}' is a base model ({target.kind}), not a local folder", f"give {EXPECTED}")
    return target


def _run_target(name: str, run: RunDir, base: str | None) -> Target:
    cfg = run.config()
    out = run.output
    inner = _adapter_target(name, out, base or cfg.base, run) if (out / "adapter_config.json").is_file() else None
    if inner is not None:
        return Target(name, "run", inner.path, inner.base, run, cfg.task_type)
    if not (out / "config.json").is_file():
        raise TunewiseError(f"'{out}' holds neither adapter_config.json nor config.json",
                            "the run's output is incomplete; train it again")
    return Target(name, "run", out, base or cfg.base, run, cfg.task_type)


def _adapter_target(name: str, p: Path, base: str | None, run: RunDir | None) -> Target:
    """A PEFT adapter folder: its base (given, else the one it names), its weights checked for damage."""
    config = _read_json(p / "adapter_config.json")
    base = base or config.get("base_model_name_or_path")
    if not base:
        raise TunewiseError(f"adapter '{p}' does not name its base model", "pass the base explicitly (--base)")
    if not any((p / f"adapter_model.{ext}").is_file() for ext in ("safetensors", "bin")):
        raise TunewiseError(f"adapter '{p}' has no weights (adapter_model.safetensors is missing)",
                            "point at the complete folder train wrote")
    if (p / "adapter_model.safetensors").is_file():
        check_weights_file(p / "adapter_model.safetensors")
    task: TaskType = "sequence-classification" if config.get("task_type") == "SEQ_CLS" else "causal-lm"
    return Target(name, "adapter", p, str(base), run, task)


def _model_target(name: str, p: Path, base: str | None) -> Target:
    archs = _read_json(p / "config.json").get("architectures") or []
    classifier = any(str(a).endswith("ForSequenceClassification") for a in archs)
    return Target(name, "model", p, base, None, "sequence-classification" if classifier else "causal-lm")


def _read_json(path: Path) -> dict:
    data = read_json_file(path, path.name)
    if not isinstance(data, dict):
        raise TunewiseError(f"{path} is not a JSON object", f"restore {path.name} as the library wrote it")
    return data



# ---------------------------------------------------------------------------------------------- checkpoints
# The layout tunewise.train.checkpoint writes (a test keeps these names equal to its own): RUN/checkpoints/step-N
# with the trainable tensors under their PEFT module names, and a marker written last.
STEP_PREFIX, COMPLETE, TRAINABLE = "step-", "COMPLETE", "trainable.safetensors"
_MATERIALISED: dict[tuple[str, int], Path] = {}  # (checkpoint, its weights' mtime) -> adapter folder
_ADAPTER_NAME = re.compile(r"\.default(?=\.|$)")  # PEFT's module names carry the adapter's name; its files do not


def _is_checkpoint(p: Path) -> bool:
    return p.name.startswith(STEP_PREFIX) and (p / TRAINABLE).is_file() and RunDir.holds_run(p.parent.parent)


def checkpoint_of(run_path: Path, step: int) -> Path:
    """RUN/checkpoints/step-N of a run directory, or an error that lists the steps the run kept."""
    if not RunDir.started(run_path):
        raise TunewiseError(f"--step {step}: '{run_path}' is not a run directory", "--step picks a checkpoint of "
                            "a run `tunewise train` wrote; give the run directory")
    root = RunDir(run_path).checkpoints
    steps = {int(c.name.removeprefix(STEP_PREFIX)): c for c in root.glob(f"{STEP_PREFIX}*")
             if c.name.removeprefix(STEP_PREFIX).isdigit() and (c / COMPLETE).is_file()} if root.is_dir() else {}
    if step not in steps:
        raise TunewiseError(f"--step {step}: run '{run_path}' has no complete checkpoint of step {step} (kept: "
                            f"{', '.join(map(str, sorted(steps))) or 'none'})", "pick a kept step; "
                            "train.save_every and train.keep_last decide which steps are kept")
    return steps[step]


def at_step(target: str | os.PathLike, step: int | None) -> str:
    """TARGET, or with --step N the folder of its run's checkpoint N (resolve_target loads a checkpoint's
    adapter from it)."""
    return str(target) if step is None else str(checkpoint_of(Path(target), step))


def weights_shown(t: Target) -> str:
    """Where the user finds a target's weights: a checkpoint's folder, not the adapter materialised from it."""
    return t.name if _is_checkpoint(Path(t.name)) else str(t.path)


def _checkpoint_target(ckpt: Path, base: str | None) -> Target:
    """The adapter of checkpoint `ckpt` as a Target of its run (method, base and task type are the run's)."""
    run = RunDir(ckpt.parent.parent)
    final = _run_target(str(run.path), run, base)
    if not final.is_adapter:
        raise TunewiseError(f"'{ckpt}' is a checkpoint of a full fine-tune ({final.method}): --step gives adapters "
                            "from checkpoints", "evaluate the run's final model/, or train.keep_best to keep the "
                            "best step as the output")
    if not (ckpt / COMPLETE).is_file():
        raise TunewiseError(f"checkpoint '{ckpt}' is incomplete (no {COMPLETE} marker: its save was cut short)",
                            "pick another step")
    return Target(str(ckpt), "run", _materialise(ckpt, final.path), final.base, run, final.task_type)


def _materialise(ckpt: Path, adapter: Path) -> Path:
    """A PEFT adapter folder with the checkpoint's tensors under the final adapter's keys (PEFT saves its module
    names without the adapter's name, '.default'); any key the checkpoint lacks, or of another shape, is an error."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    weights = check_weights_file(ckpt / TRAINABLE)
    key = (str(ckpt.resolve()), weights.stat().st_mtime_ns)
    if key in _MATERIALISED and _MATERIALISED[key].is_dir():
        return _MATERIALISED[key]
    tensors = {_ADAPTER_NAME.sub("", k): v for k, v in load_file(str(weights)).items()}
    out: dict = {}
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        for k in f.keys():  # noqa: SIM118 - safe_open is not a dict
            shape = tuple(f.get_slice(k).get_shape())
            if k not in tensors or tuple(tensors[k].shape) != shape:
                raise TunewiseError(f"checkpoint '{ckpt}' does not hold the adapter's tensor {k} {shape}",
                                    "the run's adapter/ and its checkpoints disagree; train the run again")
            out[k] = tensors[k].contiguous()
    folder = Path(tempfile.mkdtemp(prefix=f"tunewise-{ckpt.name}-"))
    atexit.register(shutil.rmtree, folder, True)
    for f in adapter.iterdir():  # config, tokenizer, labels: what the final adapter folder holds besides weights
        if f.is_file() and not f.name.startswith("adapter_model."):
            shutil.copy2(f, folder / f.name)
    save_file(out, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    _MATERIALISED[key] = folder
    return folder
