"""Peak training memory for full fine-tuning, LoRA and QLoRA: pure arithmetic on shapes and counts.

Everything here takes numbers and returns numbers (no torch, no I/O), so each term can be checked by hand.
Bytes per element and the per-layer activation counts are written out where they are used; the activation
counts were checked against what autograd actually saves on small Llamas (tests/test_estimate.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunewise.defaults import LORA_DROPOUT, loss_chunk_rows

GB = 2**30  # GiB: what cards are sold as ("80 GB" = 80 GiB) and what nvidia-smi shows
MB = 2**20  # MiB: the unit of summary.json["peak_rss_mb"] (ru_maxrss KiB / 1024)
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# NF4 with double quantisation (QLoRA, Dettmers et al. 2023, section 3): 4 bits per weight, one 8-bit absmax
# per block of 64, and one fp32 constant per 256 of those blocks: 4 + 8/64 + 32/(64*256) = 4.127 bits/param.
NF4_BITS_PER_PARAM = 4 + 8 / 64 + 32 / (64 * 256)
GPU_SIZES_GB = (16, 24, 40, 48, 80)
# Elements saved per token per layer by LoRA dropout, per input feature of an adapted module: the dropped copy
# that the A factor keeps, its mask, and the extra copies when q/k/v (and gate/up) each drop the same input.
# Fitted once on autograd's saved tensors for all-linear LoRA (tests check it stays within 10%).
LORA_DROPOUT_ELEMS_PER_INPUT = 1.47


@dataclass(frozen=True)
class Shape:
    """The sizes the activation model needs (Llama-style decoder; other families are approximated by it)."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_dim: int  # num_key_value_heads * head_dim (GQA makes k and v smaller than hidden)
    vocab: int


@dataclass(frozen=True)
class Setup:
    """How the run is set up; defaults are the seed's LoRA defaults on a bf16 GPU."""

    method: str = "lora"
    batch: int = 8
    seq: int = 512
    grad_ckpt: bool = False
    dtype: str = "bf16"  # compute / frozen-weight dtype
    optimizer: str = "adamw"  # or "adamw8bit"
    grad_accum: int = 1
    lora_dropout: float = LORA_DROPOUT
    fused: bool = True  # tunewise's `lora.fused` (its default): the fused LoRA MLP keeps less for backward
    device: str = "cuda"  # "cuda" (allocator peak + CUDA context) or "cpu" (process peak RSS)
    gpus: int = 1  # training processes (one per GPU); what each holds depends on `distributed`
    distributed: str = "ddp"  # with gpus > 1: "ddp" replicates everything, "fsdp" shards weights/grads/optimizer
    # Share of positions whose next token is a loss target: the trainer projects to the vocabulary only there
    # (train/loop.summed_loss), so completion-only data with long prompts holds far fewer logits. 1 = every
    # position, the upper bound when the data is not known.
    target_share: float = 1.0


@dataclass(frozen=True)
class Counts:
    """Parameter counts the memory model uses (all exact, from the meta-device build)."""

    total: int
    quantisable: int  # linear weights bitsandbytes turns into NF4 (every linear layer but the head)
    trainable_lora: int  # adapter parameters at the chosen rank and targets
    adapted_per_layer: int  # adapted matrices per decoder layer
    adapted_inputs_per_layer: int  # sum of d_in over the adapted matrices of one layer
    rank: int
    largest_linear: int  # biggest single linear weight (dequantised one at a time under QLoRA)
    per_layer: int = 0  # parameters of one decoder layer (an FSDP unit); the rest sits in the root unit
    gated_mlp_adapted: bool = False  # gate, up and down all carry adapters (tunewise then fuses the MLP)


@dataclass
class Breakdown:
    """Peak memory in bytes, term by term; `total` is what is compared with a card or with measured RSS."""

    method: str
    terms: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return float(sum(self.terms.values()))

    def as_dict(self) -> dict:
        return {"method": self.method, "total_gb": round(self.total / GB, 3),
                "terms_mb": {k: round(v / MB, 1) for k, v in self.terms.items()}, "notes": self.notes}


# ---------------------------------------------------------------------------------------------- activations


def layer_activation_elems(shape: Shape, method: str, counts: Counts, lora_dropout: float,
                           fused: bool = True) -> float:
    """Elements autograd keeps per token for one decoder layer.

    Full fine-tuning: the attention and MLP norms keep their input, normalised value and output (3h each, the
    residual input shared), q and k after RoPE (h + kv), v (kv), the attention output (h), and the MLP keeps
    gate, SiLU(gate), up and their product (4 * intermediate): 8h + 2kv + 4i.
    LoRA / QLoRA: frozen weights need no saved inputs for a weight gradient, so the norm's normalised value is
    not kept (-h per norm), while each adapter keeps its r-wide A-factor output and, with dropout, a dropped copy.
    tunewise's fused LoRA path (`lora.fused`, LoRA without dropout): the MLP, when gate, up and down are all
    adapted, keeps gate and up only and recomputes the other two in backward (2i instead of 4i; train/fused_mlp.py),
    and the two norms' outputs are rebuilt in backward instead of kept (-2h; train/norm_source.py).
    """
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    if method == "full":
        return 8 * h + 2 * kv + 4 * i + shape.heads + 2
    fused_path = fused and method == "lora" and lora_dropout == 0
    mlp_fused = fused_path and counts.gated_mlp_adapted
    elems = ((4 if fused_path else 6) * h + 2 * kv + (2 if mlp_fused else 4) * i
             + counts.adapted_per_layer * counts.rank + shape.heads + 2)
    if lora_dropout > 0:
        elems += LORA_DROPOUT_ELEMS_PER_INPUT * counts.adapted_inputs_per_layer
    return elems


def activation_bytes(shape: Shape, setup: Setup, counts: Counts) -> dict[str, float]:
    """Activations of one micro-batch: decoder layers (or checkpoints + one recomputed layer) and the logits."""
    tokens = setup.batch * setup.seq
    act_bytes = DTYPE_BYTES[setup.dtype]
    per_layer = (layer_activation_elems(shape, setup.method, counts, setup.lora_dropout, setup.fused)
                 * act_bytes * tokens)
    if setup.grad_ckpt:
        # only each layer's input is kept; backward recomputes one layer at a time
        layers = shape.layers * shape.hidden * act_bytes * tokens + per_layer
    else:
        layers = shape.layers * per_layer
    # logits at the target positions in fp32, computed and turned into their gradient one chunk of rows at a time
    # (train/cross_entropy.py), plus in bf16 the chunk's copy in that dtype
    rows = min(tokens * setup.target_share, loss_chunk_rows(shape.vocab))
    logits = rows * shape.vocab * (4 + (act_bytes if act_bytes != 4 else 0))
    return {"activations": layers, "logits": logits}


# ---------------------------------------------------------------------------------------------- states


def weight_bytes(counts: Counts, setup: Setup) -> dict[str, float]:
    dt = DTYPE_BYTES[setup.dtype]
    if setup.method == "qlora":
        nf4 = counts.quantisable * NF4_BITS_PER_PARAM / 8
        # embeddings, norms and the head are not quantised; PEFT's prepare_model_for_kbit_training upcasts them
        # to fp32 for stability, which is what tunewise's QLoRA path runs
        rest = (counts.total - counts.quantisable) * 4
        # each NF4 matrix is dequantised to the compute dtype for its matmul, one at a time
        return {"weights (NF4 linears)": nf4, "weights (fp32, not quantised)": rest,
                "dequantised matrix": counts.largest_linear * dt}
    return {f"weights ({setup.dtype})": counts.total * dt}


def optimizer_bytes_per_param(optimizer: str) -> float:
    """AdamW keeps two fp32 moments (8 B/param); bitsandbytes' 8-bit AdamW two 8-bit ones (+ block constants)."""
    return 8.0 if optimizer == "adamw" else 2.0 + 2 * 4 / 256


def trainable_state_bytes(counts: Counts, setup: Setup) -> dict[str, float]:
    """Gradients, fp32 master weights and optimizer states of what trains."""
    opt = optimizer_bytes_per_param(setup.optimizer)
    if setup.method == "full":
        n = counts.total
        dt = DTYPE_BYTES[setup.dtype]
        out = {f"gradients ({setup.dtype})": n * dt, f"optimizer ({setup.optimizer})": n * opt}
        if dt != 4:  # mixed precision keeps an fp32 master copy (the 16 B/param of published accounting)
            out["fp32 master weights"] = n * 4
        return out
    n = counts.trainable_lora  # adapters live in fp32 (PEFT upcasts them) whatever the base dtype
    return {"adapter weights (fp32)": n * 4, "adapter gradients (fp32)": n * 4,
            f"adapter optimizer ({setup.optimizer})": n * opt}


# ---------------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Overhead:
    """What the framework adds on top of tensors.

    cuda: the CUDA context and cuBLAS workspace (not in torch's allocator counters) plus allocator slack.
    cpu: the training process's resident baseline (Python, torch, transformers, PEFT, tokenizer, data) measured on
    this machine by benchmarks/estimate_vs_measured.py, plus glibc malloc slack as a fraction of tensor memory.
    """

    fixed_bytes: float
    fraction: float  # of all tensor memory
    source: str
    activation_fraction: float = 0.0  # of activation memory (CPU heap fragmentation, see calibration.py)


CUDA_OVERHEAD = Overhead(0.6 * GB, 0.05, "assumed: CUDA context ~0.6 GB + 5% allocator fragmentation (not measured "
                                         "here: this machine has no GPU)")


def sharded_over(setup: Setup) -> int:
    """How many processes share each weight, gradient and optimizer state: FSDP shards full and LoRA runs
    (`train.distributed: fsdp`); DDP, one process and QLoRA (4-bit weights are not sharded) keep everything."""
    if setup.gpus > 1 and setup.distributed == "fsdp" and setup.method in ("full", "lora"):
        return setup.gpus
    return 1


def fsdp_unsharded_bytes(shape: Shape, counts: Counts, setup: Setup) -> dict[str, float]:
    """What FSDP gathers whole on each process: the root unit's parameters (embeddings, final norm, head) for
    the whole step and two decoder layers at a time (the running one and the prefetched next); under full
    fine-tuning also the root's and one layer's unsharded gradients before they are reduce-scattered."""
    dt = DTYPE_BYTES[setup.dtype]
    root = max(counts.total - shape.layers * counts.per_layer, 0)
    out = {"FSDP gathered weights (root + 2 layers)": (root + 2 * counts.per_layer) * dt}
    if setup.method == "full":
        out["FSDP unsharded gradients (root + 1 layer)"] = (root + counts.per_layer) * max(dt, 4)
    return out


def estimate(shape: Shape, counts: Counts, setup: Setup, overhead: Overhead) -> Breakdown:
    """Peak memory of one training process (one GPU when setup.gpus > 1)."""
    b = Breakdown(setup.method)
    shard = sharded_over(setup)
    for k, v in weight_bytes(counts, setup).items():
        b.terms[k] = v / shard if not k.startswith("dequantised") else v
    states = trainable_state_bytes(counts, setup)
    acts = activation_bytes(shape, setup, counts)
    grads_key = next(k for k in states if "gradients" in k)
    grads = states.pop(grads_key) / shard
    for k, v in states.items():
        b.terms[k] = v / shard
    if shard > 1:
        b.notes.append(f"fsdp: weights, gradients and optimizer states sharded over {shard} processes "
                       "(fully_shard per decoder layer + root)")
        b.terms.update(fsdp_unsharded_bytes(shape, counts, setup))
    elif setup.gpus > 1:
        what = "qlora is not sharded (4-bit weights): " if setup.distributed == "fsdp" else ""
        b.notes.append(f"{what}ddp: every one of the {setup.gpus} processes holds the whole model, its gradients "
                       "and optimizer states")
        # DDP reduces gradients through flat buckets the size of all trainable gradients (a second copy)
        b.terms["DDP gradient buckets"] = grads
    act_total = acts["activations"] + acts["logits"]
    if setup.method == "full" and setup.grad_accum == 1:
        # gradients are set to None after each step and backward frees a layer's activations before it makes
        # that layer's gradients, so the two peaks do not add up: the larger one counts
        if grads > act_total:
            b.terms[grads_key] = grads
        else:
            b.terms.update(acts)
        b.notes.append("full: gradients and activations peak at different times; the larger counts")
    else:
        b.terms[grads_key] = grads
        b.terms.update(acts)
    tensors = b.total
    b.terms["framework overhead"] = overhead.fixed_bytes + overhead.fraction * tensors
    if overhead.activation_fraction:
        b.terms["allocator slack"] = overhead.activation_fraction * act_total
    b.notes.append(f"framework overhead: {overhead.source}")
    if setup.grad_ckpt:
        b.notes.append("gradient checkpointing: only layer inputs are kept; one layer is recomputed at a time")
    return b


def fits(b: Breakdown, gpu_gb: float, headroom: float = 0.95) -> str:
    """'yes', 'tight' (in the last 5% of the card: fragmentation may tip it over) or 'no', for gpu_gb GiB."""
    cap = gpu_gb * GB
    if b.total <= cap * headroom:
        return "yes"
    if b.total <= cap:
        return "tight"
    return "no"
