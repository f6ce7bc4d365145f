"""Read a written GGUF back and compare it with what it was made from.

A model file is loaded with transformers' GGUF loader (its own reader, de-quantiser, q/k un-permutation and
tokenizer rebuild, independent of our writer) and compared with the source model: max |logit diff| on the probe
prompts against the model with its weights rounded exactly as the file stores them (which must agree to float32
noise: everything else, names, q/k order, ties, would show) and against the model itself (the rounding's cost, with
greedy top-1 agreement), the token ids of a set of tricky texts, the special tokens and the chat template.
A LoRA file is read with gguf.GGUFReader and checked against the shape rules llama.cpp's adapter loader applies.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunewise.errors import TunewiseError
from tunewise.export.llama import gguf_name, llama_shape, name_map, round_like_file
from tunewise.hf import quiet_transformers

# Texts where pre-tokenizers disagree: digits, runs of spaces, newlines, tabs, accents, punctuation, specials.
TOKENIZER_PROBES = [
    "Hello world! 123 4567890",
    "  multiple   spaces\n\n\tand tabs\r\n",
    "Café déjà vu, naïve ²³ ½ — “quotes” 'n' it's we're",
    "SELECT name FROM restaurants WHERE price < 30;",
    "x=3.14159; y = -2e10 (ok?) [a] {b} <c>",
    "日本語のテキスト 🙂",
]
SPECIAL_KINDS = ("bos", "eos", "unk", "pad")


@dataclass
class ModelCheck:
    file_diff: float  # logits, GGUF (transformers' loader) vs the source model with its weights rounded as stored
    max_abs_diff: float  # logits, GGUF vs the source model itself: what the file type's rounding costs
    top1_agreement: float  # fraction of probe positions with the same argmax token
    tokenizer_equal: bool  # same ids on TOKENIZER_PROBES (with and without special tokens) and on the probes
    special_tokens_equal: bool
    chat_template_equal: bool
    vocab_equal: bool  # every real token keeps its id
    mismatches: list[str] = field(default_factory=list)  # what differed, one line each


def _load(path: Path):
    quiet_transformers()
    try:
        # The loader's own progress bar ignores transformers' switch; keep it off the user's terminal.
        with contextlib.redirect_stderr(io.StringIO()):
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                         dtype=torch.float32, local_files_only=True).eval()
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    except Exception as e:  # the loader fails in many ways on a file it cannot map
        raise TunewiseError(f"transformers could not read back the written GGUF ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''})",
                            "report this as a tunewise bug, with the model's config.json") from None
    return model, tok


def _logits(model, tokenizer, probes: list[str]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(input_ids=tokenizer(p, return_tensors="pt", add_special_tokens=False)["input_ids"]
                      ).logits.float() for p in probes]


def round_weights_(model, quant: str) -> None:
    """Round every weight of `model` in place exactly as a `quant` file stores it (tied weights once)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(round_like_file(p.detach().float().cpu().numpy(), quant)))


def check_model(path: Path, model, tokenizer, probes: list[str], quant: str) -> ModelCheck:
    """Compare the GGUF at `path` with (model, tokenizer) it was written from. Rounds `model`'s weights in place:
    the file must hold exactly the rounded model (file_diff); how far rounding moved it is max_abs_diff."""
    gmodel, gtok = _load(path)
    mismatches = []
    source = _logits(model, tokenizer, probes)
    round_weights_(model, quant)
    rounded = _logits(model, tokenizer, probes)
    read = _logits(gmodel, tokenizer, probes)
    file_diff = max((g - r).abs().max().item() for g, r in zip(read, rounded))
    worst = max((g - s).abs().max().item() for g, s in zip(read, source))
    same = sum(int((g.argmax(-1) == s.argmax(-1)).sum()) for g, s in zip(read, source))
    total = sum(s.shape[1] for s in source)
    tok_equal = True
    for text in TOKENIZER_PROBES + probes:
        for special in (True, False):
            want = tokenizer(text, add_special_tokens=special)["input_ids"]
            got = gtok(text, add_special_tokens=special)["input_ids"]
            if want != got:
                tok_equal = False
                mismatches.append(f"tokens of {text[:30]!r} (special={special}): {want[:8]}... vs {got[:8]}...")
    specials_equal = True
    for kind in SPECIAL_KINDS:
        want, got = getattr(tokenizer, f"{kind}_token"), getattr(gtok, f"{kind}_token")
        if want != got:
            specials_equal = False
            mismatches.append(f"{kind}_token: {want!r} vs {got!r}")
    template_equal = (tokenizer.chat_template or None) == (gtok.chat_template or None)
    if not template_equal:
        mismatches.append("chat template differs")
    gvocab = gtok.get_vocab()
    vocab_equal = all(gvocab.get(t) == i for t, i in tokenizer.get_vocab().items())
    if not vocab_equal:
        mismatches.append("some tokens have other ids")
    return ModelCheck(file_diff, worst, same / max(total, 1), tok_equal, specials_equal, template_equal, vocab_equal,
                      mismatches)


def check_lora(path: Path, config, alpha: float) -> list[str]:
    """Problems llama.cpp's adapter loader would raise for the LoRA GGUF at `path` (empty: none), checked against
    the base shapes the config implies."""
    shape = llama_shape(config)
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    problems = []
    for key, want in (("general.type", "adapter"), ("general.architecture", "llama"), ("adapter.type", "lora")):
        if fields.get(key) != want:
            problems.append(f"{key} = {fields.get(key)!r}, not {want!r}")
    if abs(float(fields.get("adapter.lora.alpha", float("nan"))) - alpha) > 1e-4 * max(1.0, abs(alpha)):
        problems.append(f"adapter.lora.alpha = {fields.get('adapter.lora.alpha')}, not {alpha}")
    # The base's tensors and their ggml shapes [in, out], from the config.
    kv = shape.head_count_kv * shape.head_dim
    q = shape.head_count * shape.head_dim
    per_block = {"self_attn.q_proj": (shape.embedding_length, q), "self_attn.k_proj": (shape.embedding_length, kv),
                 "self_attn.v_proj": (shape.embedding_length, kv), "self_attn.o_proj": (q, shape.embedding_length),
                 "mlp.gate_proj": (shape.embedding_length, shape.feed_forward_length),
                 "mlp.up_proj": (shape.embedding_length, shape.feed_forward_length),
                 "mlp.down_proj": (shape.feed_forward_length, shape.embedding_length)}
    tmap = name_map(shape)
    base = {gguf_name(tmap, f"model.layers.{i}.{m}.weight"): ne
            for i in range(shape.block_count) for m, ne in per_block.items()}
    tensors = {t.name: [int(x) for x in t.shape] for t in reader.tensors}
    for name, ne in tensors.items():
        stem, _, part = name.rpartition(".")
        if part not in ("lora_a", "lora_b"):
            problems.append(f"tensor '{name}' has unexpected suffix")
            continue
        if stem not in base:
            problems.append(f"tensor '{name}': '{stem}' does not exist in the base")
            continue
        other = tensors.get(f"{stem}.lora_{'b' if part == 'lora_a' else 'a'}")
        if other is None:
            problems.append(f"'{stem}' is missing one component")
            continue
        a, b = (ne, other) if part == "lora_a" else (other, ne)
        if base[stem][0] != a[0] or base[stem][1] != b[1]:
            problems.append(f"'{stem}' has incorrect shape: a {a}, b {b}, base {list(base[stem])}")
        elif a[1] != b[0]:
            problems.append(f"'{stem}': lora_a rank {a[1]} != lora_b rank {b[0]}")
    return problems
