"""CPU overhead terms, measured on this machine (not derived): see benchmarks/RESULTS-estimate.md.

On CPU the quantity predicted is the training process's peak RSS (ru_maxrss), which includes everything the
process imported and allocated besides the model's tensors: Python, torch, transformers, PEFT (and bitsandbytes'
CPU backend for QLoRA), the tokenizer, the data, matplotlib for loss.png. That baseline is measured by running
`tunewise train` on a micro model (hidden 32, so its tensors are ~1 MB) and subtracting the tensor estimate;
benchmarks/estimate_vs_measured.py re-measures it and prints both, and validates on other models (the tiny base
and a ~50M Llama) that were not used to fit it.
"""

from __future__ import annotations

from tunewise.estimate.memory import MB, Overhead

# MiB of resident memory a `tunewise train` process has besides the model's tensors, per method.
CPU_BASELINE_MB = {"full": 0.0, "lora": 0.0, "qlora": 0.0}
# Allocator slack as a fraction of tensor memory (freed blocks glibc keeps mapped).
CPU_SLACK_FRACTION = 0.0
MEASURED_ON = "not yet measured"


def cpu_overhead(method: str) -> Overhead:
    return Overhead(CPU_BASELINE_MB[method] * MB, CPU_SLACK_FRACTION,
                    f"measured: `tunewise train` baseline RSS on this machine ({MEASURED_ON}), "
                    f"{CPU_BASELINE_MB[method]:.0f} MiB for {method}")
