"""A PEFT LoRA adapter as a GGUF LoRA in llama.cpp's layout (`llama-cli -m base.gguf --lora adapter.gguf`).

llama.cpp pairs `<base tensor name>.lora_a` with `.lora_b` and adds scale * B (A x) to the base layer, with
scale = adapter.lora.alpha / rank and rank read from lora_b. lora_a is stored as PEFT's A (r x in, so its ggml
shape is [in, r]) and lora_b as B (out x r, ggml [r, out]); the loader checks base ne[0] == a ne[0],
base ne[1] == b ne[1] and a ne[1] == b ne[0]. Because the base's q/k rows are reordered for llama.cpp's rotary
layout, the rows of B for q_proj and k_proj are reordered the same way (dW = B A, so permuting dW's rows is
permuting B's). rsLoRA's alpha / sqrt(r) is written as alpha * sqrt(r), so llama.cpp's alpha / r gives the same.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import torch

from tunewise.adapters.delta import alpha_for_rank_division
from tunewise.adapters.format import parse_key, read_weights
from tunewise.errors import TunewiseError
from tunewise.export.llama import (
    ARCH,
    FILE_TYPES,
    encode,
    gguf_name,
    llama_shape,
    name_map,
    permute_heads,
    rope_permute,
)

LORA_QUANTS = ("f32", "f16")
LORA_HINT = "merge it instead (tunewise merge, then tunewise export --format gguf)"


def lora_scale_alpha(cfg: dict) -> float:
    """The alpha to write so that llama.cpp's alpha / rank equals PEFT's scaling for this adapter config."""
    if cfg.get("peft_type", "LORA") != "LORA":
        raise TunewiseError(f"adapter type {cfg.get('peft_type')} is not LoRA", "GGUF LoRA holds LoRA adapters only")
    if cfg.get("task_type") not in (None, "CAUSAL_LM"):
        raise TunewiseError(f"the adapter is for {cfg.get('task_type')}, not a causal language model; llama.cpp "
                            "has no place for its head", "serve it with tunewise serve or transformers")
    for key, what in (("use_dora", "DoRA magnitudes"), ("modules_to_save", "fully trained modules"),
                      ("trainable_token_indices", "trained embedding rows"), ("rank_pattern", "per-layer ranks"),
                      ("alpha_pattern", "per-layer alphas")):
        if cfg.get(key):
            raise TunewiseError(f"the adapter has {what} ({key}), which llama.cpp's LoRA format cannot hold",
                                LORA_HINT)
    if cfg.get("bias", "none") != "none":
        raise TunewiseError(f"the adapter trains biases (bias={cfg.get('bias')}), which llama.cpp's LoRA format "
                            "cannot hold", LORA_HINT)
    return alpha_for_rank_division(cfg)


def lora_tensors(weights: dict[str, torch.Tensor], config) -> list[tuple[str, torch.Tensor]]:
    """(gguf name, tensor) for every LoRA factor, B rows of q/k reordered for llama.cpp's rotary layout."""
    shape = llama_shape(config)
    tmap = name_map(shape)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in weights.items():
        k = parse_key(key)
        if k is None or not k.factor or k.embedding or not (k.prefixed and k.weight):
            raise TunewiseError(f"adapter tensor '{key}' is not a LoRA A or B factor", LORA_HINT)
        module = k.module
        if module.endswith(("embed_tokens", "lm_head")):
            raise TunewiseError(f"the adapter has LoRA on '{module}', which tunewise does not export to GGUF",
                                LORA_HINT)
        pairs.setdefault(module, {})[k.factor] = t.detach().to(torch.float32).cpu()
    out = []
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise TunewiseError(f"adapter module '{module}' has factor {next(iter(ab))} without its partner",
                                "the adapter file is incomplete; save it again")
        name = gguf_name(tmap, f"{module}.weight")
        a, b = ab["A"], ab["B"]
        heads = permute_heads(name, shape)
        if heads is not None:
            b = rope_permute(b, heads)
        out += [(f"{name}.lora_a", a), (f"{name}.lora_b", b)]
    return out


def write_lora(path, adapter_dir: Path, adapter_cfg: dict, config, *, quant: str, name: str) -> int:
    """Write the adapter at `adapter_dir` as a GGUF LoRA; returns the number of tensors written."""
    if quant not in LORA_QUANTS:
        raise TunewiseError(f"--quant {quant} is not one of {', '.join(LORA_QUANTS)} for a GGUF LoRA",
                            "pick one of those")
    alpha = lora_scale_alpha(adapter_cfg)
    tensors = lora_tensors(read_weights(adapter_dir), config)
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_file_type(getattr(gguf.LlamaFileType, FILE_TYPES[quant]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for tname, t in tensors:
        data, raw = encode(t.numpy(), quant)
        writer.add_tensor(tname, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return len(tensors)
