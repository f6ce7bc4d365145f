"""What differs between LoRA, QLoRA and full fine-tuning, as three small strategy objects for one loop.

Each says how to load the base, how to make it trainable, which parameters the optimizer sees, what a checkpoint
holds and what the run finally saves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

from tunewise.adapters.format import is_lora_b
from tunewise.config import RunConfig
from tunewise.data.formats import IGNORE, Example
from tunewise.errors import ConfigError
from tunewise.models import linear_target_modules, load_model
from tunewise.train import fused_lora, fused_mlp, norm_source


class Method(Protocol):
    name: str
    output_name: str  # the run directory's sub-folder: "adapter" or "model"

    def load(self, cfg: RunConfig) -> torch.nn.Module: ...
    def prepare(self, model: torch.nn.Module, cfg: RunConfig, token_ids: list[int]) -> torch.nn.Module: ...
    def param_groups(self, model: torch.nn.Module, cfg: RunConfig, lr: float) -> list[dict]: ...
    def trainable_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]: ...
    def load_trainable_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None: ...
    def save(self, model: torch.nn.Module, out: Path) -> None: ...


def copy_named(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def trainable_token_ids(cfg: RunConfig, tokenizer, examples: list[Example]) -> list[int]:
    """The token ids whose embedding rows an adapter trains (`lora.trainable_tokens`); [] when none are asked for."""
    spec = cfg.lora.trainable_tokens
    if not spec or cfg.method == "full":
        return []
    if cfg.task_type != "causal-lm":
        raise ConfigError(["lora.trainable_tokens: only for causal-lm runs (a classifier predicts labels, not "
                           "tokens); remove lora.trainable_tokens"])
    if spec == "targets":
        return sorted({t for ex in examples for t in ex.labels if t != IGNORE})
    return sorted({t for text in spec for t in tokenizer(text, add_special_tokens=False)["input_ids"]})


def _load(cfg: RunConfig, quantize: bool) -> torch.nn.Module:
    return load_model(cfg.base, dtype=cfg.train.dtype, device=cfg.train.device, quantize_4bit=quantize,
                      task=cfg.task_type, num_labels=cfg.num_labels)


def check_lora_fits(model: torch.nn.Module, r: int, targets: list[str] | str) -> None:
    """Refuse target modules the model does not have and a rank wider than every layer it adapts, by name,
    before PEFT fails on them with its own error (or tries to allocate a rank of 10^23)."""
    modules = dict(model.named_modules())
    if isinstance(targets, list):
        have = {name.rsplit(".", 1)[-1] for name in modules}
        missing = [t for t in targets if t not in have and t not in modules]
        if missing:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, torch.nn.Linear)})
            raise ConfigError([f"lora.target_modules: the model has no module named {', '.join(map(repr, missing))}"
                               f"; its linear layers are {', '.join(linear) or '(none)'} (or use 'auto')"])
    widths = [max(m.in_features, m.out_features) for m in modules.values() if hasattr(m, "in_features")
              and hasattr(m, "out_features")]
    if widths and r > max(widths):
        raise ConfigError([f"lora.r: {r} is wider than any layer of the model (widest {max(widths)}); "
                           "typical ranks are 8 to 64"])


@dataclass
class LoraMethod:
    name: str = "lora"
    output_name: str = "adapter"

    def load(self, cfg: RunConfig) -> torch.nn.Module:
        return _load(cfg, quantize=False)

    def peft_config(self, model: torch.nn.Module, cfg: RunConfig, token_ids: list[int] | None = None):
        targets = cfg.lora.target_modules
        if targets == "auto":
            targets = linear_target_modules(model)
        check_lora_fits(model, cfg.lora.r, targets)
        init = {"default": True, "pissa": "pissa", "gaussian": "gaussian"}[cfg.lora.init]
        return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.scaling_alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=targets, use_rslora=cfg.lora.use_rslora, use_dora=cfg.lora.use_dora,
                          init_lora_weights=init, trainable_token_indices=token_ids or None,
                          task_type="SEQ_CLS" if cfg.task_type == "sequence-classification" else "CAUSAL_LM")

    def prepare(self, model: torch.nn.Module, cfg: RunConfig, token_ids: list[int]) -> torch.nn.Module:
        if cfg.train.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        return _fuse(get_peft_model(model, self.peft_config(model, cfg, token_ids)), cfg)

    def param_groups(self, model: torch.nn.Module, cfg: RunConfig, lr: float) -> list[dict]:
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        ratio = cfg.lora.loraplus_lr_ratio
        if not ratio:
            return [{"params": [p for _, p in trainable], "lr": lr, "base_lr": lr}]
        # LoRA+ (Hayou et al.): B learns `ratio` times faster than A.
        b = [p for n, p in trainable if is_lora_b(n)]
        rest = [p for n, p in trainable if not is_lora_b(n)]
        return [{"params": rest, "lr": lr, "base_lr": lr}, {"params": b, "lr": lr * ratio, "base_lr": lr * ratio}]

    def trainable_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def load_trainable_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        copy_named(model, state)

    def save(self, model: torch.nn.Module, out: Path) -> None:
        model.save_pretrained(str(out), safe_serialization=True)


def _fuse(model: torch.nn.Module, cfg: RunConfig) -> torch.nn.Module:
    """PEFT's LoRA layers, and the gated MLPs built of them, through tunewise's fused functions (`lora.fused`);
    QLoRA's 4-bit layers keep PEFT's."""
    if cfg.lora.fused:
        fused_lora.install(model)
        fused_mlp.install(model)
        if not cfg.train.gradient_checkpointing:  # checkpointing drops what norm_source saves, and would keep inputs
            norm_source.install(model)
    return model


@dataclass
class QLoraMethod(LoraMethod):
    """LoRA on a 4-bit NF4 base with double quantisation (bitsandbytes; fp32 compute on CPU, bf16 on GPU)."""

    name: str = "qlora"

    def load(self, cfg: RunConfig) -> torch.nn.Module:
        return _load(cfg, quantize=True)

    def prepare(self, model: torch.nn.Module, cfg: RunConfig, token_ids: list[int]) -> torch.nn.Module:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
        return get_peft_model(model, self.peft_config(model, cfg, token_ids))


@dataclass
class FullMethod:
    name: str = "full"
    output_name: str = "model"

    def load(self, cfg: RunConfig) -> torch.nn.Module:
        return _load(cfg, quantize=False)

    def prepare(self, model: torch.nn.Module, cfg: RunConfig, token_ids: list[int]) -> torch.nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        if cfg.train.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    def param_groups(self, model: torch.nn.Module, cfg: RunConfig, lr: float) -> list[dict]:
        # No weight decay on norms and biases (the usual AdamW practice).
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        return [{"params": decay, "lr": lr, "base_lr": lr},
                {"params": no_decay, "lr": lr, "base_lr": lr, "weight_decay": 0.0}]

    def trainable_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        # Tied weights appear once (safetensors refuses shared storage).
        seen: set[int] = set()
        out = {}
        for n, p in model.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out[n] = p.detach().clone()
        return out

    def load_trainable_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        copy_named(model, state)

    def save(self, model: torch.nn.Module, out: Path) -> None:
        model.save_pretrained(str(out), safe_serialization=True)


METHOD_IMPLS: dict[str, type] = {"lora": LoraMethod, "qlora": QLoraMethod, "full": FullMethod}


def get_method(name: str) -> Method:
    return METHOD_IMPLS[name]()
