"""A Llama model (config + state dict) as a GGUF file in llama.cpp's layout.

Tensor names come from the gguf package's map for the llama architecture (model.layers.N.self_attn.q_proj ->
blk.N.attn_q ...). llama.cpp applies rotary embeddings to adjacent pairs of a head's dimensions while Hugging Face
Llama rotates the two halves, so the rows of q_proj and k_proj are reordered per head (`rope_permute`); a reader
(transformers' GGUF loader) undoes it. With tied embeddings there is no output.weight: llama.cpp and transformers
both read that absence as "tied". 1-D tensors (norms) stay float32 in every file type, as llama.cpp's converter
keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf
import numpy as np
import torch

from tunewise.errors import TunewiseError
from tunewise.progress import progress_bar, shown

ARCH = "llama"
SUPPORTED_MODEL_TYPES = {"llama": "LlamaForCausalLM"}
QUANTS = ("f32", "f16", "bf16", "q8_0")
UNSUPPORTED_HINT = ("GGUF export supports Llama-architecture models (LlamaForCausalLM: the tiny base, SmolLM2, "
                    "Llama 2/3 without RoPE scaling); convert others with llama.cpp's convert_hf_to_gguf.py")


@dataclass(frozen=True)
class LlamaShape:
    """The hyper-parameters llama.cpp reads for the llama architecture."""

    vocab_size: int
    context_length: int
    embedding_length: int
    feed_forward_length: int
    block_count: int
    head_count: int
    head_count_kv: int
    head_dim: int
    rope_freq_base: float
    rms_norm_eps: float
    tied: bool


def llama_shape(config) -> LlamaShape:
    """Check that a transformers config is a Llama llama.cpp runs as `llama`, and read its shape."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise TunewiseError(f"GGUF export of a '{model_type}' model is not supported", UNSUPPORTED_HINT)
    architectures = getattr(config, "architectures", None) or []
    if architectures and architectures[0] not in SUPPORTED_MODEL_TYPES.values():
        raise TunewiseError(f"this model is a {architectures[0]}; GGUF export writes causal language models "
                            f"({', '.join(SUPPORTED_MODEL_TYPES.values())}), and llama.cpp has no place for its head",
                            "serve a classifier with tunewise serve or transformers")
    refusals = {
        "hidden_act": (getattr(config, "hidden_act", "silu") != "silu", "an activation other than SiLU"),
        "attention_bias": (bool(getattr(config, "attention_bias", False)), "attention biases"),
        "mlp_bias": (bool(getattr(config, "mlp_bias", False)), "MLP biases"),
    }
    rope = dict(getattr(config, "rope_parameters", None) or {})
    legacy_scaling = getattr(config, "rope_scaling", None)
    rope_type = rope.get("rope_type") or (legacy_scaling or {}).get("rope_type") or "default"
    refusals["rope"] = (rope_type != "default", f"RoPE scaling ('{rope_type}')")
    for key, (refused, what) in refusals.items():
        if refused:
            raise TunewiseError(f"this Llama uses {what} ({key}), which the GGUF export does not write",
                                UNSUPPORTED_HINT)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return LlamaShape(vocab_size=config.vocab_size, context_length=config.max_position_embeddings,
                      embedding_length=config.hidden_size, feed_forward_length=config.intermediate_size,
                      block_count=config.num_hidden_layers, head_count=heads,
                      head_count_kv=getattr(config, "num_key_value_heads", None) or heads, head_dim=head_dim,
                      rope_freq_base=float(theta), rms_norm_eps=float(config.rms_norm_eps),
                      tied=bool(getattr(config, "tie_word_embeddings", False)))


def rope_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the output rows of q_proj / k_proj (or a LoRA B) from HF's half-split rotary layout to llama.cpp's
    interleaved one: per head, rows [0..d/2) and [d/2..d) become pairs (0, d/2), (1, d/2+1), ..."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def permute_heads(gguf_name: str, shape: LlamaShape) -> int | None:
    """The head count whose rotary layout this tensor's rows follow, or None when it has no rotary rows."""
    if ".attn_q." in gguf_name:
        return shape.head_count
    if ".attn_k." in gguf_name:
        return shape.head_count_kv
    return None


def name_map(shape: LlamaShape):
    return gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, shape.block_count)


def gguf_name(tmap, hf_name: str) -> str:
    """llama.cpp's name for a Hugging Face Llama parameter ('model.layers.0.self_attn.q_proj.weight')."""
    name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise TunewiseError(f"tensor '{hf_name}' has no llama.cpp name in the llama architecture", UNSUPPORTED_HINT)
    return name


def encode(data: np.ndarray, quant: str):
    """(array to write, raw ggml type or None): 1-D stays F32; Q8_0 needs rows that are a multiple of 32 and falls
    back to F16 otherwise, as llama.cpp's converter does."""
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim <= 1 or quant == "f32":
        return data, None
    if quant == "f16":
        return data.astype(np.float16), None
    qtype = {"bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[quant]
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.quants.QuantError:
        return data.astype(np.float16), None


def round_like_file(data: np.ndarray, quant: str) -> np.ndarray:
    """`data` as the file will hold it, back in float32: what a reader de-quantises (the reference for checks)."""
    stored, raw = encode(data, quant)
    if raw is None:
        return stored.astype(np.float32)
    return gguf.quants.dequantize(stored, raw).astype(np.float32).reshape(data.shape)


FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}


def add_shape_metadata(writer, shape: LlamaShape) -> None:
    writer.add_vocab_size(shape.vocab_size)
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.embedding_length)
    writer.add_feed_forward_length(shape.feed_forward_length)
    writer.add_block_count(shape.block_count)
    writer.add_head_count(shape.head_count)
    writer.add_head_count_kv(shape.head_count_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_freq_base)
    writer.add_layer_norm_rms_eps(shape.rms_norm_eps)
    if shape.head_dim * shape.head_count != shape.embedding_length:
        # llama.cpp assumes n_embd / n_head per head unless told
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)


def _add_tensors(writer, state_dict: dict[str, torch.Tensor], shape: LlamaShape, tmap, quant: str) -> int:
    """Convert each tensor (rope-permuted where llama.cpp wants it, rounded to `quant`) into the writer."""
    count = 0
    bar = progress_bar(len(state_dict), f"GGUF {quant}: converting", "tensor")
    try:
        for hf_name, tensor in state_dict.items():
            bar.update(1)
            if hf_name == "lm_head.weight" and shape.tied:
                continue  # one matrix for both; llama.cpp reuses token_embd.weight
            name = gguf_name(tmap, hf_name)
            t = tensor.detach().to(torch.float32).cpu()
            heads = permute_heads(name, shape)
            if heads is not None:
                t = rope_permute(t, heads)
            data, raw = encode(t.numpy(), quant)
            writer.add_tensor(name, data, raw_dtype=raw)
            count += 1
    finally:
        bar.close()
    return count


def write_model(path, config, state_dict: dict[str, torch.Tensor], vocab, *, quant: str, name: str) -> int:
    """Write a Llama model GGUF to `path`; returns the number of tensors written."""
    if quant not in QUANTS:
        raise TunewiseError(f"--quant {quant} is not one of {', '.join(QUANTS)}", "pick one of those")
    shape = llama_shape(config)
    tmap = name_map(shape)
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    add_shape_metadata(writer, shape)
    writer.add_file_type(getattr(gguf.LlamaFileType, FILE_TYPES[quant]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    vocab.write(writer)
    count = _add_tensors(writer, state_dict, shape, tmap, quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=shown())  # gguf's own bar, in bytes
    writer.close()
    return count
