"""`tunewise estimate`: exact parameter counts (meta device) and a peak-memory model for full / LoRA / QLoRA.

    from tunewise.estimate import EstimateRequest, run_estimate
    result = run_estimate(EstimateRequest(model="llama-2-7b", rank=8, targets="q_proj,v_proj"))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tunewise.defaults import BY_MEMORY, LORA_DROPOUT, METHODS
from tunewise.errors import TunewiseError
from tunewise.estimate.calibration import cpu_overhead
from tunewise.estimate.memory import (
    CUDA_OVERHEAD,
    DTYPE_BYTES,
    GB,
    GPU_SIZES_GB,
    Breakdown,
    Counts,
    Setup,
    Shape,
    estimate,
    fits,
)
from tunewise.estimate.params import (
    ModelSpec,
    adapter_file_bytes,
    load_spec,
    lora_matrix_params,
    lora_params,
    preset_names,
    resolve_targets,
)
from tunewise.hf import context_length

__all__ = ["EstimateRequest", "EstimateResult", "EstimateInputError", "run_estimate", "load_spec", "shape_of",
           "counts_for", "lora_matrix_params", "preset_names", "validate_request", "GPU_SIZES_GB"]


class EstimateInputError(TunewiseError):
    """Every problem with the inputs, listed together."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) with the input:\n{body}")


@dataclass
class EstimateRequest:
    model: str
    methods: tuple[str, ...] = BY_MEMORY  # the table's order: most memory first
    rank: int = 16
    targets: str | list[str] = "all-linear"
    batch: int = 8
    seq: int = 512
    grad_ckpt: bool = False
    dtype: str | None = None  # None: bf16 on cuda, fp32 on cpu (the device policy)
    optimizer: str = "adamw"
    device: str = "cuda"
    gpus: int = 1  # training processes (torchrun --nproc-per-node x nodes)
    distributed: str = "ddp"  # train.distributed: ddp replicates, fsdp shards (full and lora)
    lora_dropout: float = LORA_DROPOUT
    grad_accum: int = 1
    target_share: float = 1.0  # share of positions that are loss targets (logits are computed only there)

    @property
    def compute_dtype(self) -> str:
        return self.dtype or ("fp32" if self.device == "cpu" else "bf16")


def validate_request(req: EstimateRequest) -> list[str]:
    """Problems with the numbers and names (not the model, which is resolved separately)."""
    p = []
    bad = [m for m in req.methods if m not in METHODS]
    if bad or not req.methods:
        p.append(f"--method: unknown {', '.join(bad) or '(none)'}; use {', '.join(METHODS)} or all")
    if req.rank <= 0:
        p.append(f"--rank must be > 0 (got {req.rank}); typical values are 16 or 32")
    for name, value in (("--batch", req.batch), ("--seq-len", req.seq), ("--gpus", req.gpus),
                        ("--grad-accum", req.grad_accum)):
        if value <= 0:
            p.append(f"{name} must be > 0 (got {value})")
    if req.dtype is not None and req.dtype not in DTYPE_BYTES:
        p.append(f"--dtype: unknown '{req.dtype}'; use fp32, bf16 or fp16")
    if req.optimizer not in ("adamw", "adamw8bit"):
        p.append(f"--optimizer: unknown '{req.optimizer}'; use adamw or adamw8bit")
    if req.distributed not in ("ddp", "fsdp"):
        p.append(f"--distributed: unknown '{req.distributed}'; use ddp or fsdp")
    if req.device not in ("cuda", "cpu"):
        p.append(f"--device: unknown '{req.device}'; use cuda or cpu")
    if not 0 <= req.lora_dropout < 1:
        p.append(f"--lora-dropout must be in [0, 1) (got {req.lora_dropout})")
    if not 0 < req.target_share <= 1:
        p.append(f"--target-share must be in (0, 1] (got {req.target_share}): the share of tokens that are loss "
                 "targets, e.g. 0.4 for completions that are 40% of each example")
    return p


def shape_of(spec: ModelSpec) -> Shape:
    c = spec.config
    get = lambda *names, default=None: next((getattr(c, n) for n in names if getattr(c, n, None)), default)  # noqa: E731
    hidden = int(get("hidden_size", "n_embd", "d_model"))
    heads = int(get("num_attention_heads", "n_head", default=1))
    head_dim = int(get("head_dim", default=hidden // heads))
    kv_heads = int(get("num_key_value_heads", default=heads))
    return Shape(hidden=hidden, layers=int(get("num_hidden_layers", "n_layer", "num_layers")),
                 intermediate=int(get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
                 heads=heads, kv_dim=kv_heads * head_dim, vocab=int(get("vocab_size", default=0)))


def counts_for(spec: ModelSpec, rank: int, targets: list[str]) -> Counts:
    shape = shape_of(spec)
    per_type = lora_params(spec, rank, targets)
    layer_targets = [t for t in targets if spec.linear[t].count % shape.layers == 0]
    per_layer = sum(spec.linear[t].count // shape.layers for t in layer_targets)
    # one decoder layer's parameters: its linear layers (all of them, not just the adapted ones) and two norms
    layer_params = sum(g.params // shape.layers for n, g in spec.linear.items()
                       if n != spec.output_layer and g.count % shape.layers == 0) + 2 * shape.hidden
    inputs = sum(spec.linear[t].d_in * (spec.linear[t].count // shape.layers) for t in layer_targets)
    return Counts(total=spec.total_params, quantisable=spec.linear_params, trainable_lora=sum(per_type.values()),
                  adapted_per_layer=per_layer, adapted_inputs_per_layer=inputs, rank=rank,
                  largest_linear=max((g.d_in * g.d_out for g in spec.linear.values()), default=0),
                  per_layer=layer_params,
                  gated_mlp_adapted={"gate_proj", "up_proj", "down_proj"} <= set(layer_targets))


# ---------------------------------------------------------------------------------------------- anchors


@dataclass(frozen=True)
class Anchor:
    """A published memory figure and the setup it was measured in, to print next to our estimate for it."""

    preset: str
    label: str
    method: str
    setup: dict
    published_gb: float
    source: str


ANCHORS = [
    Anchor("llama-2-7b", "QLoRA, 7B, batch 1, seq 512, r=64 all linear, checkpointing", "qlora",
           {"rank": 64, "targets": "all-linear", "batch": 1, "seq": 512, "grad_ckpt": True, "lora_dropout": 0.1},
           6.9, "QLoRA paper (Dettmers et al. 2023, Fig. 6; LLaMA-7B has Llama-2-7B's shape)"),
]


# ---------------------------------------------------------------------------------------------- result


@dataclass
class EstimateResult:
    request: EstimateRequest
    spec: ModelSpec
    targets: list[str]
    lora_per_type: dict[str, int]
    breakdowns: dict[str, Breakdown]
    anchors: list[dict] = field(default_factory=list)

    @property
    def trainable(self) -> dict[str, int]:
        n = sum(self.lora_per_type.values())
        return {"full": self.spec.total_params, "lora": n, "qlora": n}

    @property
    def warnings(self) -> list[str]:
        """What makes the figures a plan for something that cannot run as asked."""
        max_pos = context_length(self.spec.config)
        if max_pos is not None and self.request.seq > max_pos:
            return [f"--seq-len {self.request.seq} is beyond the model's context of {max_pos} tokens: training "
                    f"truncates to data.max_seq_len, so plan with --seq-len {max_pos} or less"]
        return []

    def fits_table(self, sizes: tuple[int, ...] = GPU_SIZES_GB) -> dict[str, dict[int, str]]:
        return {m: {s: fits(b, s) for s in sizes} for m, b in self.breakdowns.items()}

    def as_dict(self) -> dict:
        s = self.spec
        r = self.request
        return {
            "model": {"name": s.name, "source": s.source, "architecture": s.architecture, "hub_id": s.hub_id,
                      "total_params": s.total_params, "embedding_params": s.embedding_params,
                      "tied_output": s.tied_output},
            "setup": {"rank": r.rank, "targets": self.targets, "batch": r.batch, "seq": r.seq,
                      "grad_ckpt": r.grad_ckpt, "dtype": r.compute_dtype, "optimizer": r.optimizer,
                      "device": r.device, "gpus": r.gpus,
                      "distributed": r.distributed if r.gpus > 1 else None, "lora_dropout": r.lora_dropout,
                      "target_share": r.target_share},
            "modules": {n: {"count": g.count, "shape": [g.d_out, g.d_in], "params": g.params,
                            "lora_params": g.lora_params(r.rank) if n in self.targets else 0,
                            "targeted": n in self.targets} for n, g in s.linear.items()},
            "trainable": self.trainable,
            "trainable_pct": {m: round(100 * v / s.total_params, 4) for m, v in self.trainable.items()},
            "adapter_file_bytes": adapter_file_bytes(s, r.rank, self.targets),
            "memory": {m: b.as_dict() for m, b in self.breakdowns.items()},
            "fits": {m: {f"{k}GB": v for k, v in t.items()} for m, t in self.fits_table().items()},
            "anchors": self.anchors,
            "warnings": self.warnings,
        }


def _overhead(req: EstimateRequest, method: str):
    if req.device == "cpu":
        return cpu_overhead(method)
    return CUDA_OVERHEAD


def breakdown_for(spec: ModelSpec, req: EstimateRequest, method: str, targets: list[str]) -> Breakdown:
    setup = Setup(method=method, batch=req.batch, seq=req.seq, grad_ckpt=req.grad_ckpt, dtype=req.compute_dtype,
                  optimizer=req.optimizer, grad_accum=req.grad_accum, lora_dropout=req.lora_dropout,
                  device=req.device, gpus=req.gpus, distributed=req.distributed, target_share=req.target_share)
    return estimate(shape_of(spec), counts_for(spec, req.rank, targets), setup, _overhead(req, method))


def anchors_for(spec: ModelSpec, req: EstimateRequest) -> list[dict]:
    out = []
    for a in ANCHORS:
        if spec.preset != a.preset or req.device != "cuda":
            continue
        areq = replace(req, **{"grad_ckpt": False, "lora_dropout": 0.05, **a.setup}, gpus=1, dtype="bf16",
                       optimizer="adamw", grad_accum=1)
        b = breakdown_for(spec, areq, a.method, resolve_targets(spec, areq.targets))
        out.append({"label": a.label, "source": a.source, "method": a.method, "published_gb": a.published_gb,
                    "estimate_gb": round(b.total / GB, 2), "ratio": round(b.total / GB / a.published_gb, 2)})
    if req.device == "cuda" and "full" in req.methods:
        # setup-free check: mixed-precision AdamW is 16-18 bytes/param before activations (research.md section 5)
        b = breakdown_for(spec, replace(req, dtype="bf16", optimizer="adamw", gpus=1, grad_accum=2), "full",
                          resolve_targets(spec, req.targets))
        states = sum(v for k, v in b.terms.items() if k.startswith(("weights", "gradients", "optimizer", "fp32")))
        out.append({"label": "full fine-tuning, bf16 + AdamW: bytes/param before activations", "method": "full",
                    "source": "published accounting: 16-18 B/param (weights 2, grads 2-4, fp32 master + moments 12)",
                    "published_gb": None, "published": "16-18 B/param",
                    "estimate": f"{states / spec.total_params:.1f} B/param", "ratio": None})
    return out


def run_estimate(req: EstimateRequest, spec: ModelSpec | None = None) -> EstimateResult:
    """Counts and memory for every requested method; raises EstimateInputError listing every problem."""
    problems = validate_request(req)
    if spec is None:
        try:
            spec = load_spec(req.model)
        except TunewiseError as e:
            problems.append(e.message + (f" ({e.hint})" if e.hint else ""))
    targets: list[str] = []
    if spec is not None:
        try:
            targets = resolve_targets(spec, req.targets)
        except TunewiseError as e:
            problems.append(f"--targets: {e.message} ({e.hint})")
    if problems:
        raise EstimateInputError(problems)
    assert spec is not None
    per_type = lora_params(spec, req.rank, targets)
    breakdowns = {m: breakdown_for(spec, req, m, targets) for m in req.methods}
    return EstimateResult(req, spec, targets, per_type, breakdowns, anchors_for(spec, req))
