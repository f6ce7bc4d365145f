"""`tunewise merge`: fold a LoRA adapter into its base and write a safetensors model folder, verified.

LoRA: W' = W + (alpha / r) * B @ A on the fp32 base (PEFT's merge_and_unload); the written folder is reloaded
with from_pretrained and its logits are compared to the adapter model's on probe prompts (max abs diff must be
within the tolerance, 1e-3 by default (MERGE_TOLERANCE), or nothing is written).

QLoRA: the adapter was trained against the NF4-quantised base, so it is merged into the de-quantised weights
dequant(NF4(W)) rather than the original W. The reference is the adapter on the 4-bit model; the difference is
reported (not enforced), together with what merging into the original fp32 base would have given.

--dtype (default: the base's own, from its config.json) is the precision written. The merge itself is always done
and checked in float32; a 16-bit merge is then rounded, written, and checked to reload exactly as the rounded model
(file_diff), and what the rounding costs against the adapter model is reported as max_abs_diff.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tunewise.adapters import AdapterRefused, BaseInfo, check_adapter, same_base
from tunewise.defaults import MERGE_TOLERANCE
from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_json, replace_dir
from tunewise.models import attach_adapter, load_base, load_config, load_model, load_resolved, resolve_base
from tunewise.ownership import check_dir, mark_dir
from tunewise.targets import resolve_target, resolve_tuned, weights_shown

PROBES = [
    "The Golden Bistro is a thai restaurant in the riverside area.",
    "Q: What is 7 + 5? A:",
    "SELECT name FROM restaurants WHERE",
    "ID:",
]
MERGE_REPORT = "merge.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class MergeResult:
    out: str
    adapter: str
    base: str
    method: str  # "lora" | "qlora"
    max_abs_diff: float  # merged model (reloaded from disk) vs the adapter model, logits on the probes
    tolerance: float
    verified: bool  # max_abs_diff <= tolerance
    probes: int
    dtype: str = "fp32"
    diff_if_merged_into_original_base: float | None = None  # QLoRA only
    merge_diff: float | None = None  # 16-bit only: the float32 merge vs the adapter model, before rounding
    file_diff: float | None = None  # 16-bit only: reloaded vs the rounded merged model (the write itself)


def base_dtype(base: str) -> str:
    """The base's own precision as recorded in its config.json (dtype / torch_dtype); fp32 when it says none."""
    recorded = getattr(load_config(base), "dtype", None)
    name = str(recorded).replace("torch.", "") if recorded is not None else "float32"
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, "fp32")


def max_logit_diff(model_a, model_b, tokenizer, prompts: list[str]) -> float:
    """Max |logits_a - logits_b| over every position of every prompt (one prompt at a time: no padding)."""
    worst = 0.0
    with torch.no_grad():
        for p in prompts:
            ids = tokenizer(p, return_tensors="pt", add_special_tokens=False)["input_ids"]
            a = model_a(input_ids=ids.to(next(model_a.parameters()).device)).logits.float().cpu()  # (1, T, V)
            b = model_b(input_ids=ids.to(next(model_b.parameters()).device)).logits.float().cpu()  # (1, T, V)
            worst = max(worst, (a - b).abs().max().item())
    return worst


def _cast_weights_(model, dtype: torch.dtype) -> None:
    """Cast the parameters only: model.to() would also round buffers such as RoPE's inv_freq, which a reload
    recomputes in float32 (tied weights are one parameter, cast once)."""
    for p in model.parameters():
        p.data = p.data.to(dtype)


def _diff(model, tokenizer, probes: list[str], ref_logits: list[torch.Tensor]) -> float:
    """Max |logits - reference| over the probes (one prompt at a time)."""
    worst = 0.0
    with torch.no_grad():
        for p, r in zip(probes, ref_logits, strict=True):
            got = model(**tokenizer(p, return_tensors="pt", add_special_tokens=False)).logits.float()
            worst = max(worst, (got - r).abs().max().item())
    return worst


def refuse_other_base(tuned: str | Path, base: str | None, flag: str = "--base") -> None:
    """An adapter used on a base other than the one its run or adapter_config records is refused by the rule merge
    applies (adapters.same_base: the same id, folder or identical copy), before any model is loaded."""
    if base is None:
        return
    own = resolve_target(str(tuned))  # the base it records, not the one given
    if not own.is_adapter or not own.base:
        return
    given = resolve_base(base)
    if not same_base(own.base, BaseInfo(given.name, given.path, {}, torch.float32)):
        raise TunewiseError(f"'{tuned}' was trained on base '{own.base}', but {flag} is '{base}'",
                            "use it with its own base, or retrain it on this one (merge refuses the same pair)")


def _check(ref, model, base: str) -> None:
    """The checks `tunewise serve` applies (safetensors only, fits the base, not a no-op), less the batch-only ones."""
    info = BaseInfo.from_model(model, base, resolve_base(base).path)
    try:
        check_adapter(ref.path.name, ref.path, info, mixed_batches=False)
    except AdapterRefused as e:
        raise TunewiseError(f"{ref.path}: {e.reason}", "merge an adapter trained on this base, saved as "
                            "safetensors") from e


def merge_adapter(tuned: str | Path, out: str | Path, *, base: str | None = None, tolerance: float = MERGE_TOLERANCE,
                  qlora: bool | None = None, probes: list[str] | None = None, force: bool = False,
                  dtype: str | None = None) -> MergeResult:
    """Merge the adapter at `tuned` (run dir or adapter folder) into its base; write `out` in `dtype` (fp32, bf16,
    fp16; default: the base's own); verify."""
    out = check_dir(out, "merged model", force=force)  # a folder tunewise did not write is never replaced
    ref = resolve_tuned(tuned, base)
    if not ref.is_adapter:
        raise TunewiseError(f"'{tuned}' is already a full model ({ref.path}); there is no adapter to merge",
                            "merge a LoRA or QLoRA run directory or adapter folder")
    qlora = ref.method == "qlora" if qlora is None else qlora
    dtype = dtype or base_dtype(ref.base)
    if dtype not in DTYPES:
        raise TunewiseError(f"--dtype {dtype} is not one of {', '.join(DTYPES)}", "pick one of those")
    probes = probes or PROBES

    reference, adapted, tokenizer = _adapter_models(ref, qlora)
    # Reference logits are taken before merging (merge_and_unload changes the weights in place).
    with torch.no_grad():
        ref_logits = [reference(**tokenizer(p, return_tensors="pt", add_special_tokens=False)
                                ).logits.float().cpu() for p in probes]
    merged = adapted.merge_and_unload()
    merge_diff = None
    if dtype != "fp32":
        merge_diff = _diff(merged, tokenizer, probes, ref_logits)  # the merge itself, before rounding
        _cast_weights_(merged, DTYPES[dtype])
    merged.config.dtype = DTYPES[dtype]
    result = MergeResult(str(out), weights_shown(ref), ref.base, "qlora" if qlora else "lora", 0.0, tolerance, False,
                         len(probes), dtype, None, merge_diff, None)
    _write_verified(merged, tokenizer, ref, out, result, probes, ref_logits, force)
    return result


def _adapter_models(ref, qlora: bool):
    """(reference, adapter model to merge, tokenizer). LoRA: the adapter on the fp32 base is both. QLoRA: the
    reference is the adapter on the 4-bit base (the model QLoRA trained and evaluated); it is merged into
    dequant(NF4(W)) in fp32."""
    if qlora:
        qbase, tokenizer = load_base(ref.base, dtype="fp32", quantize_4bit=True)
        _check(ref, qbase, ref.base)
        reference = attach_adapter(qbase, ref.path).eval()
        target, _ = load_base(ref.base, dtype="fp32", quantize_4bit=True, device="cpu")
        target = target.dequantize()  # W := dequant(NF4(W)), fp32
    else:
        target, tokenizer = load_base(ref.base, dtype="fp32", device="cpu")
        _check(ref, target, ref.base)
        reference = None
    adapted = attach_adapter(target, ref.path).eval()
    return (reference if reference is not None else adapted), adapted, tokenizer


def _write_verified(merged, tokenizer, ref, out: Path, result: MergeResult, probes: list[str],
                    ref_logits: list[torch.Tensor], force: bool) -> None:
    """Save into a temporary folder, reload and compare; fill in `result`; the folder becomes `out` only when
    verified (or forced, or QLoRA, whose difference is reported, not enforced)."""
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # Reloaded in float32 (a 16-bit file is up-cast exactly), so only the written weights differ.
        reloaded = load_model(tmp, dtype="fp32", device="cpu").eval()
        result.max_abs_diff = _diff(reloaded, tokenizer, probes, ref_logits)
        if result.dtype != "fp32":
            _cast_weights_(merged, torch.float32)  # exact: every 16-bit value is a float32
            with torch.no_grad():
                rounded = [merged(**tokenizer(p, return_tensors="pt", add_special_tokens=False)).logits.float()
                           for p in probes]
            result.file_diff = _diff(reloaded, tokenizer, probes, rounded)
        if result.method == "qlora":
            result.diff_if_merged_into_original_base = _diff_into_original(ref, tokenizer, probes, ref_logits)
        # fp32: the written model must match the adapter model. 16-bit: the float32 merge must, and the file must
        # hold exactly the rounded merge; the rounding's own cost (max_abs_diff) is reported.
        checked = result.max_abs_diff if result.dtype == "fp32" else max(result.merge_diff, result.file_diff)
        result.verified = checked <= result.tolerance
        if result.method != "qlora" and not result.verified and not force:
            raise TunewiseError(f"merged model differs from the adapter model by {checked:.3g} (max abs logit), "
                                f"over the tolerance {result.tolerance:g}; nothing was written",
                                "check the adapter and base, or pass --tolerance / --force to keep it anyway")
        atomic_write_json(tmp / MERGE_REPORT, asdict(result))
        mark_dir(tmp, "merged model")
        if out.exists():
            shutil.rmtree(out)
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _diff_into_original(ref, tokenizer, probes: list[str], ref_logits: list[torch.Tensor]) -> float:
    """QLoRA: how far merging into the original fp32 base (not dequant(NF4(W))) would be from the reference."""
    into_fp = load_resolved(ref, dtype="fp32", device="cpu", quantize_4bit=False)[0].merge_and_unload()
    with torch.no_grad():
        return max((into_fp(**tokenizer(p, return_tensors="pt", add_special_tokens=False)).logits.float() - r
                    ).abs().max().item() for p, r in zip(probes, ref_logits, strict=True))
