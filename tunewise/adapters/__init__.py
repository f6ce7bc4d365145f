"""The one owner of PEFT's LoRA adapter format in tunewise.

    format.py   the folder on disk: file names, tensor keys (lora_A / lora_B, base_model.model. prefix), reading
                it and writing a changed copy
    delta.py    the scaling rule (alpha / r, rsLoRA alpha / sqrt(r), alpha_pattern) and dW = scaling * B @ A
    forward.py  a live PEFT layer's factors and the LoRA linear forward that training's fused kernels and serving's
                per-row LoRA share
    check.py    an adapter folder checked against a base before anything loads it (serve, merge)

analysis, export, merge, serve, generate and train ask these modules; none of them spells PEFT's keys or scaling.
"""

from tunewise.adapters.check import (
    FLOAT_DTYPES,
    AdapterInfo,
    AdapterRefused,
    AdapterTensors,
    BaseInfo,
    check_adapter,
    check_config,
    check_tensors,
    read_tensors,
    same_base,
)
from tunewise.adapters.format import PICKLE_FILES, SAFETENSORS, TOKEN_DELTA

__all__ = ["FLOAT_DTYPES", "PICKLE_FILES", "SAFETENSORS", "TOKEN_DELTA", "AdapterInfo", "AdapterRefused",
           "AdapterTensors", "BaseInfo", "check_adapter", "check_config", "check_tensors", "read_tensors", "same_base"]
