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
# full re-measured 2026-12-01 (the process baseline had fallen by ~150 MiB since 2026-11-28), lora again at 22:05
# the same day after the fused MLP and the rebuilt norm outputs changed what it keeps; qlora is the 2026-11-28 figure.
CPU_BASELINE_MB = {"full": 431.9, "lora": 472.2, "qlora": 605.0}
# glibc heap fragmentation: the forward pass's many same-sized temporaries leave freed blocks the next step cannot
# reuse, so RSS grows by a fraction of the activation memory (MALLOC_MMAP_THRESHOLD_=65536 removes most of it).
# Fitted per method on the tiny base; the ~50M model is the held-out check.
CPU_ACTIVATION_SLACK = {"full": 0.414, "lora": 0.843, "qlora": 0.731}
MEASURED_ON = "2026-12-01 (qlora 2026-11-28), 4-step runs, 2 CPU cores; benchmarks/RESULTS.md"


def cpu_overhead(method: str) -> Overhead:
    return Overhead(CPU_BASELINE_MB[method] * MB, 0.0,
                    f"measured on this machine ({MEASURED_ON}): `tunewise train` baseline RSS "
                    f"{CPU_BASELINE_MB[method]:.0f} MiB for {method}, + {CPU_ACTIVATION_SLACK[method]:.2f} x "
                    "activations of allocator slack", activation_fraction=CPU_ACTIVATION_SLACK[method])
