"""Typed run config for `tunewise train` (and what `advise --write-config` writes).

Unknown keys are errors that name the key and suggest the closest valid one; every problem is reported at once.
Field descriptions are the documentation (and show up in `tunewise train --help-config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from tunewise.defaults import (
    LORA_DROPOUT,
    LORA_DROPOUT_WHY,
    TINY_BASE,
    MethodName,
    default_lr,
    lora_lr_limit,
    lr_table,
)
from tunewise.errors import ConfigError
from tunewise.inputs import Strict, load_file, validate
from tunewise.userfiles import parse_yaml

DataFormat = Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "text", "chat"]


class DataSource(Strict):
    path: str | None = Field(None, description="A data file (JSONL / JSON / CSV / Parquet), a save_to_disk folder "
                                               "or a dataset id (datasets.load_dataset).")
    probe: str | None = Field(None, description="Instead of path: training records of a retention probe's skill "
                                                "(arithmetic, lm, knowledge).")
    weight: float = Field(1.0, gt=0, description="Share of the mix (weights are normalised).")
    split: str | None = Field(None, description="Split of a dataset; default data.split.")
    columns: dict[str, str] | None = Field(None, description="{our field: the dataset's column}; default "
                                                             "data.columns.")

    @model_validator(mode="after")
    def _one_of_path_or_probe(self) -> DataSource:
        if (self.path is None) == (self.probe is None):
            raise ValueError("give exactly one of path or probe")
        return self


class DataConfig(Strict):
    train: str | list[DataSource] = Field(
        description="Training data: a file (JSONL / JSON / CSV / Parquet), a save_to_disk folder or a dataset id; "
                    "or a weighted list of sources, e.g. [{path: train.jsonl, weight: 0.9}, "
                    "{probe: knowledge, weight: 0.1}].")
    eval: str | DataSource | None = Field(None, description="Evaluation data (eval loss each epoch); optional.")
    format: DataFormat = Field(
        "auto", description="Record format: alpaca, sharegpt, messages, prompt_completion or text; 'auto' "
                            "detects it per record ('chat' = messages).")
    split: str = Field("train", description="Split read from a dataset id or a DatasetDict folder.")
    columns: dict[str, str] = Field(default_factory=dict, description="Rename a dataset's columns to the "
                                    "format's fields: {instruction: question, output: answer}.")
    packing: bool = Field(False, description="Pack several examples into each row of max_seq_len tokens (no "
                                             "attention across examples, positions restart per example).")
    max_seq_len: int = Field(256, gt=0, description="Longest example in tokens.")
    overlong: Literal["truncate", "drop", "error"] = Field("truncate", description="What to do with longer examples.")
    group_by_length: bool = Field(True, description="Batch examples of similar length so padding wastes little.")
    check: bool = Field(True, description="Run the schema check first and refuse a dataset with errors.")

    @field_validator("train")
    @classmethod
    def _train_not_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("give at least one source")
        return v

    def sources(self) -> list[DataSource]:
        """data.train as a list of sources (a plain path is one source of weight 1)."""
        return [DataSource(path=self.train)] if isinstance(self.train, str) else list(self.train)


class LoraConfig(Strict):
    r: int = Field(16, gt=0, description="Adapter rank; 16 or 32 for most tasks (the seed's default).")
    alpha: float | None = Field(None, gt=0, description="Scaling alpha; default = r (the seed), or 2r.")
    dropout: float = Field(LORA_DROPOUT, ge=0, lt=1, description=LORA_DROPOUT_WHY)
    target_modules: list[str] | Literal["auto", "all-linear"] = Field(
        "auto", description="'auto' = all linear layers of the architecture (q,k,v,o,gate,up,down for Llama).")
    use_rslora: bool = Field(False, description="Scale by alpha/sqrt(r) (rank-stabilised LoRA).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    loraplus_lr_ratio: float | None = Field(None, gt=0, description="LoRA+: lr of B = ratio x lr of A (e.g. 16).")
    init: Literal["default", "pissa", "gaussian"] = Field("default", description="Adapter initialisation.")
    fused: bool = Field(True, description="Compute each adapted linear layer, and each gated MLP whose three "
                                          "projections are adapted, in one fused autograd function (the same maths "
                                          "as PEFT's forward with fewer passes over the activations and half the "
                                          "MLP's saved activations), with frozen norm outputs rebuilt in backward "
                                          "instead of kept (tunewise/train/fused_lora.py, fused_mlp.py, "
                                          "norm_source.py); false = PEFT's own forward.")
    trainable_tokens: list[str] | Literal["targets"] = Field(
        default_factory=list,
        description="Also train the embedding rows of these strings' tokens (PEFT trainable tokens), or of every "
                    "token the training targets hold ('targets'). For tokens the base never learned, such as the "
                    "brackets of a new output format: with frozen embeddings LoRA cannot make them likely.")

    @property
    def scaling_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.r)


class TrainConfig(Strict):
    epochs: float = Field(3, gt=0, description="Passes over the data; the seed: <= 3.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    lr: float | None = Field(None, gt=0, description="Learning rate; default by method and model size "
                                                     f"(tunewise/defaults.py: {lr_table()}).")
    batch_size: int = Field(8, gt=0, description="Examples per micro-batch (per process).")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step (effective batch = batch_size "
                                                 "x grad_accum x processes).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not on norms and biases).")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of the steps spent warming the lr up from 0.")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="lr schedule after warmup.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; null disables it.")
    optimizer: Literal["adamw", "adamw8bit"] = Field("adamw", description="'adamw8bit' keeps the optimizer states "
                                                     "in 8 bits (bitsandbytes).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory, "
                                                            "about a third more time.")
    seed: int = Field(0, description="Seed of the data order and the adapter's initialisation.")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="Compute dtype; 'auto' = bf16 on a GPU "
                                                           "that has it (else fp16), fp32 on CPU.")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda[:N]'.")
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0 = only at the end).")
    keep_last: int = Field(2, ge=1, description="Complete checkpoints kept on disk; with 2 or more, resume falls "
                                                "back to the previous one when the latest is corrupted.")
    distributed: Literal["ddp", "fsdp"] = Field("ddp", description="Under torchrun: 'ddp' replicates the model on "
                                                "every process; 'fsdp' shards weights, gradients and optimizer "
                                                "states (PyTorch fully_shard).")
    log_every: int = Field(1, gt=0, description="Write a metrics.jsonl line every N steps.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="Also log the config, step metrics, evals, guard events and summary to "
                                          "these trackers, inside the run directory (the 'tracking' extra).")
    eval_every: int = Field(0, ge=0, description="Eval loss every N steps as well as after each epoch (0 = per "
                                                 "epoch only); needs data.eval.")
    keep_best: bool = Field(False, description="Keep the weights of the lowest eval loss (run_dir/best) and save "
                                               "them as the output instead of the last step's; needs data.eval.")

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_none(cls, v: Any) -> Any:
        if v is None or v == "none":
            return []
        return [v] if isinstance(v, str) else v


class GuardConfig(Strict):
    overfit_loss: float = Field(0.2, ge=0, description="Smoothed train loss below this = overfitting (the seed).")
    overfit_action: Literal["warn", "stop", "reduce_lr"] = Field("warn", description="What the overfit guard does: "
                                                                  "warn, stop training, or halve the lr.")
    smoothing: int = Field(10, gt=0, description="Steps in the moving average the overfit guard looks at.")
    spike_factor: float = Field(3.0, gt=1, description="Loss above this x the running median = a spike.")
    grad_norm_limit: float = Field(100.0, gt=0, description="Pre-clip gradient norm above this = exploding.")
    max_epochs: float = Field(3, gt=0, description="Warn above this many epochs (diminishing returns).")
    lora_lr_limit: float | None = Field(
        None, gt=0, description="Warn when a LoRA lr is above this (instability); default 1e-4 from 1B parameters "
                                "(the seed), 3x the size's default lr below.")


class PreserveConfig(Strict):
    probes: list[str] = Field(default_factory=list, description="Retention probes run before and after training.")
    max_drop: float = Field(0.1, ge=0, description="Largest allowed relative drop of a probe's score.")
    action: Literal["warn", "fail"] = Field("warn", description="'fail': exit 1 when a probe dropped further "
                                                                "than max_drop.")
    limit: int = Field(64, gt=0, description="Examples per probe.")


class RunConfig(Strict):
    base: str = Field(TINY_BASE, description="Base model: 'tiny', 'minilm', a local folder or a hub id.")
    method: MethodName = Field("lora", description="lora, qlora (LoRA on a 4-bit base) or full fine-tuning.")
    task_type: Literal["causal-lm", "sequence-classification"] = Field(
        "causal-lm", description="causal-lm (text generation) or sequence-classification (a classifier head).")
    num_labels: int | None = Field(None, gt=1, description="Classes, for sequence-classification.")
    data: DataConfig
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    guards: GuardConfig = Field(default_factory=GuardConfig)
    preserve: PreserveConfig = Field(default_factory=PreserveConfig)
    output_dir: str | None = Field(None, description="Run directory; default runs/<method>-<timestamp>.")

    @field_validator("base")
    @classmethod
    def _base_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("base must name a model ('tiny', a folder or a hub id)")
        return v

    @model_validator(mode="after")
    def _classification_needs_labels(self) -> RunConfig:
        if self.task_type == "sequence-classification" and not self.num_labels:
            raise ValueError("num_labels is required when task_type is sequence-classification")
        return self

    @model_validator(mode="after")
    def _best_needs_eval(self) -> RunConfig:
        wants = [k for k in ("eval_every", "keep_best") if getattr(self.train, k)]
        if wants and not self.data.eval:
            names = " and ".join(f"train.{k}" for k in wants)
            raise ValueError(f"{names} {'need' if len(wants) > 1 else 'needs'} a validation set: set data.eval")
        return self

    @property
    def lr(self) -> float:
        """The learning rate; `tunewise train` fills train.lr from the model's size when it is not given."""
        if self.train.lr is None:
            raise RuntimeError("train.lr is resolved from the model's size once the model is loaded")
        return self.train.lr

    def with_size_defaults(self, n_params: int) -> RunConfig:
        """train.lr and guards.lora_lr_limit for a model of n_params parameters, where the config left them out."""
        encoder = self.task_type == "sequence-classification"
        train = self.train.model_copy(update={"lr": self.train.lr or default_lr(self.method, n_params, encoder)[0]})
        guards = self.guards.model_copy(update={"lora_lr_limit": self.guards.lora_lr_limit or lora_lr_limit(n_params)})
        return self.model_copy(update={"train": train, "guards": guards})


# ---------------------------------------------------------------------------------------------- loading


def validate_config(data: dict, source: str | None = None) -> RunConfig:
    """A RunConfig from a dict; raises ConfigError listing every problem (unknown keys and bad values)."""
    return validate(RunConfig, data, source)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'lora.r=32' -> (['lora', 'r'], 32); the value is parsed as YAML so numbers, lists and null work."""
    if "=" not in text:
        raise ConfigError([f"--set '{text}': expected key=value, e.g. lora.r=32"])
    key, raw = text.split("=", 1)
    return key.strip().split("."), parse_yaml(raw, f"--set {text}") if raw.strip() else ""


def apply_set_flags(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # e.g. `lora: 5` in the file, then --set lora.r=8
                raise ConfigError([f"--set {text}: '{part}' is not a section"])
        node[path[-1]] = value
    return data


# Keys that older tunewise versions wrote into every run's config.yaml at an inert value. A run directory's own
# config drops them, so `--resume` of an older run keeps working; a user's config with them still gets the error.
RETIRED_RUN_KEYS = {("train", "tensorboard"): False}


def load_run_config(path: str | Path, overrides: list[str] | None = None, run_dir_config: bool = False) -> RunConfig:
    path = Path(path)

    def prepare(data: dict) -> dict:
        for (section, key), inert in RETIRED_RUN_KEYS.items() if run_dir_config else ():
            if isinstance(data.get(section), dict) and data[section].get(key, not inert) == inert:
                del data[section][key]
        data = apply_set_flags(data, overrides or [])
        # relative data paths are relative to the config file, so a config works from any directory
        section = data.get("data") if isinstance(data.get("data"), dict) else {}
        for key in ("train", "eval"):
            value = section.get(key)
            if isinstance(value, (list, dict)):
                for entry in value if isinstance(value, list) else [value]:
                    if isinstance(entry, dict) and (found := _relative_to(path, entry.get("path"))):
                        entry["path"] = found
            elif found := _relative_to(path, value):
                section[key] = found
        return data

    return load_file(RunConfig, path, prepare)


def _relative_to(config: Path, value) -> str | None:
    """A relative data path that exists next to the config file (so a config works from any directory)."""
    if isinstance(value, str) and not Path(value).is_absolute() and not Path(value).exists():
        candidate = config.parent / value
        if candidate.exists():
            return str(candidate)
    return None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
