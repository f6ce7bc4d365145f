"""`tunewise export`: resolve the target, write the GGUF into a temporary file, check it, rename it into place.

A model GGUF is made from a model folder (a base alias such as `tiny`, a full fine-tune's run directory or model
folder) or from an adapter, which is first merged into its base in float32 (`tunewise merge`'s code, verified
there). The written file is read back with transformers' GGUF loader and must give the logits of the model with its
weights rounded exactly as the file stores them (max |logit diff| <= 1e-4), the same tokens and the same chat
template, or nothing is written unless --force. What the rounding itself costs (f16, bf16, q8_0) is reported.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.adapters.format import read_config, weights_file
from tunewise.errors import TunewiseError
from tunewise.export.llama import QUANTS, llama_shape, write_model
from tunewise.export.lora import LORA_QUANTS, lora_scale_alpha, write_lora
from tunewise.export.verify import check_lora, check_model
from tunewise.export.vocab import build_vocab
from tunewise.merge import PROBES, merge_adapter
from tunewise.models import load_config, load_model, load_tokenizer, resolve_on_disk
from tunewise.ownership import check_file

FORMATS = ("gguf", "gguf-lora")
TOLERANCE = 1e-4  # GGUF read back vs the same weights rounded in memory: float32 noise only
F16_BOUND = 1e-2  # issue 19's bound on what f16 rounding may cost; reported, since it depends on the weights
DEFAULT_QUANT = {"gguf": "f16", "gguf-lora": "f32"}


@dataclass
class ExportResult:
    out: str
    format: str
    quant: str
    target: str
    base: str | None  # the base an adapter belongs to (gguf-lora: export that base too, and load both)
    source: str  # "model" | "merged adapter" | "adapter"
    tensors: int
    bytes: int
    pre_tokenizer: str | None = None
    file_diff: float | None = None  # logits, GGUF read back by transformers vs the source rounded as stored
    tolerance: float | None = None  # on file_diff
    max_abs_diff: float | None = None  # logits, GGUF read back vs the source model: the cost of the rounding
    top1_agreement: float | None = None
    tokenizer_equal: bool | None = None
    chat_template_equal: bool | None = None
    chat_template: bool | None = None  # the file carries one
    lora_alpha: float | None = None
    verified: bool | None = None  # None: not checked (--no-verify)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check_out(out: Path, force: bool) -> None:
    if out.suffix != ".gguf":
        raise TunewiseError(f"--out '{out}' does not end in .gguf", "name the output file like model.gguf")
    check_file(out, "GGUF file", force=force)  # a GGUF holds no mark: an existing one is replaced only with --force


def _tmp_path(out: Path) -> Path:
    return out.with_name(f".{out.stem}.tmp-{os.getpid()}.gguf")


def _load_folder(folder: Path):
    """(float32 model, tokenizer as saved: no pad filled in) of a model folder."""
    model = load_model(folder, dtype="fp32", device="cpu").eval()
    tokenizer = load_tokenizer(folder, fill_pad=False)
    return model, tokenizer


def export_gguf(target, out, *, quant: str = "f16", base: str | None = None, tolerance: float | None = None,
                verify: bool = True, force: bool = False, probes: list[str] | None = None) -> ExportResult:
    """Write TARGET (a model, or an adapter merged into its base) as a llama.cpp GGUF at `out`."""
    if quant not in QUANTS:
        raise TunewiseError(f"--quant {quant} is not one of {', '.join(QUANTS)}", "pick one of those")
    out = Path(out)
    _check_out(out, force)
    ref = resolve_on_disk(target, base)
    tolerance = TOLERANCE if tolerance is None else tolerance
    probes = probes or PROBES
    out.parent.mkdir(parents=True, exist_ok=True)  # only now that the target is known to be exportable
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".tunewise-export-") as work:
        if ref.is_adapter:
            folder = Path(work) / "merged"
            merge_adapter(target, folder, base=base, dtype="fp32")
            source = "merged adapter"
        else:
            folder, source = ref.path, "model"
        model, tokenizer = _load_folder(folder)
        llama_shape(model.config)  # refuse an unsupported architecture before building anything else
        vocab = build_vocab(tokenizer, model.config.vocab_size)
        tmp = _tmp_path(out)
        name = Path(ref.run_dir or ref.path).name
        try:
            count = write_model(tmp, model.config, model.state_dict(), vocab, quant=quant, name=name)
            result = ExportResult(str(out), "gguf", quant, str(target), ref.base if ref.is_adapter else None,
                                  source, count, tmp.stat().st_size, pre_tokenizer=vocab.pre, tolerance=tolerance,
                                  chat_template=vocab.chat_template is not None)
            if verify:
                check = check_model(tmp, model, tokenizer, probes, quant)
                result.file_diff, result.max_abs_diff = check.file_diff, check.max_abs_diff
                result.top1_agreement = check.top1_agreement
                result.tokenizer_equal = check.tokenizer_equal and check.vocab_equal and check.special_tokens_equal
                result.chat_template_equal = check.chat_template_equal
                result.problems = list(check.mismatches)
                within = check.file_diff <= tolerance
                if not within:
                    result.problems.append(f"max |logit diff| {check.file_diff:.3g} against the same weights "
                                           f"rounded to {quant} is over the tolerance {tolerance:g}")
                if quant == "f16" and check.max_abs_diff > F16_BOUND:
                    result.notes.append(f"rounding these weights to f16 moves the logits by up to "
                                        f"{check.max_abs_diff:.3g} (over {F16_BOUND:g}); the file holds them exactly; "
                                        "--quant f32 keeps them whole")
                result.verified = within and result.tokenizer_equal and result.chat_template_equal
                if not result.verified and not force:
                    raise TunewiseError(f"the written GGUF does not read back as the model "
                                        f"({'; '.join(result.problems[:3])}); nothing was written",
                                        "pass --tolerance or --force to keep it anyway, or report this")
            if ref.method == "qlora":
                result.notes.append("QLoRA: merged into the de-quantised base it was trained against")
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return result


def export_gguf_lora(target, out, *, quant: str = "f32", base: str | None = None,
                     force: bool = False) -> ExportResult:
    """Write the adapter at TARGET as a llama.cpp GGUF LoRA at `out`, checked against llama.cpp's loader rules."""
    if quant not in LORA_QUANTS:
        raise TunewiseError(f"--quant {quant} is not one of {', '.join(LORA_QUANTS)} for a GGUF LoRA",
                            "pick one of those")
    out = Path(out)
    _check_out(out, force)
    ref = resolve_on_disk(target, base)
    if not ref.is_adapter:
        raise TunewiseError(f"'{target}' is a full model ({ref.path}), not an adapter",
                            "export it with --format gguf")
    weights_file(ref.path)  # a pickle-only adapter is refused before anything is read
    cfg = read_config(ref.path)
    config = load_config(ref.base)
    alpha = lora_scale_alpha(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(out)
    try:
        count = write_lora(tmp, ref.path, cfg, config, quant=quant, name=Path(ref.run_dir or ref.path).name)
        problems = check_lora(tmp, config, alpha)
        if problems:
            raise TunewiseError(f"the written GGUF LoRA would not load in llama.cpp ({'; '.join(problems[:3])})",
                                "report this as a tunewise bug")
        result = ExportResult(str(out), "gguf-lora", quant, str(target), ref.base, "adapter", count,
                              tmp.stat().st_size, lora_alpha=alpha, verified=True)
        if ref.method == "qlora":
            result.notes.append("QLoRA: trained against the 4-bit base; on a 16-bit base GGUF it behaves like "
                                "the adapter on the original base (see tunewise merge)")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return result
