"""Sharded training on PyTorch's own FSDP2 (`fully_shard`) and `torch.distributed.checkpoint`; nothing home-made.

Each decoder layer is one FSDP unit (its weights are gathered for its forward and backward, then freed), the root
holds the rest (embeddings, final norm, head: tied weights stay in one unit). For LoRA the frozen base and the
adapters are sharded alike; only the adapters get gradients and optimizer state. Gradients are reduce-scattered
and averaged over ranks, as DDP averages them, so the loop's loss scaling gives the same update.

Checkpoints: every rank writes its own shard (DCP) plus its RNG state into one temporary folder; after a barrier
rank 0 records the sha256 of every file, writes the marker and renames the folder (the same complete-or-invisible
rule as checkpoint.py). The final output is gathered to rank 0 as a full state dict and saved as the usual PEFT
adapter / transformers model folder.

torch.distributed.checkpoint is imported by the functions that save and load shards: a run that does not shard never
loads it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from tunewise.config import RunConfig
from tunewise.errors import ConfigError, TunewiseError
from tunewise.fileio import atomic_write_json
from tunewise.train.checkpoint import (
    TrainState,
    abandon,
    begin,
    latest_checkpoint,
    publish,
    read_state,
    rng_state,
    set_rng_state,
    state_record,
    write_failed,
)
from tunewise.train.distributed import DistContext


def check_supported(cfg: RunConfig) -> None:
    problems = []
    if cfg.method == "qlora":
        problems.append("train.distributed: fsdp shards full and lora runs; qlora's 4-bit weights cannot be "
                        "sharded here (use method: lora with distributed: fsdp, or distributed: ddp)")
    if cfg.preserve.probes:
        problems.append("preserve.probes: the after-training probes need the whole model in one process; with "
                        "distributed: fsdp remove preserve.probes and run `tunewise eval` on the output instead")
    if cfg.train.keep_best:
        problems.append("train.keep_best: the best weights are kept as whole tensors in one process; with "
                        "distributed: fsdp keep the checkpoints (train.keep_last) and evaluate them instead")
    if problems:
        raise ConfigError(problems)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules transformers itself never splits across devices (its `_no_split_modules`): the decoder layers."""
    names: set[str] = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError([f"train.distributed: fsdp: {type(model).__name__} names no decoder layer class "
                           "(_no_split_modules) to shard by; use distributed: ddp"])
    return layers


def shard(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """fully_shard each decoder layer, then the root; parameters become DTensors (build the optimizer after)."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        _return_freed_buffers()
    mesh = init_device_mesh(device.type, (ctx.world,))
    # bf16 compute with fp32 gradient reduction on GPUs; CPUs compute in fp32 (their bf16 matmuls are slow).
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if device.type == "cuda"
          else MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def _return_freed_buffers(threshold: int = 1 << 16) -> None:
    """On CPU every step all-gathers each layer and builds unsharded gradients, megabytes each, then frees them.
    glibc raises its mmap threshold as such blocks are freed, after which they come from the heap and stay resident
    (measured on a 2-process ~50M run: peak RSS 1.5 GiB instead of 0.9). A fixed threshold (what
    MALLOC_MMAP_THRESHOLD_=65536 does) hands them back to the OS when freed."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly sharded) tensor."""
    return t.to_local() if hasattr(t, "to_local") else t


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A reduced scalar such as clip_grad_norm_'s total norm as a plain tensor (every rank gets the value)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # The frozen base is the base model on disk: checkpoints hold what trains (LoRA: the adapters).
    return StateDictOptions(ignore_frozen_params=True, **kw)


def save_rng(path: Path) -> None:
    torch.save(rng_state(), path)


def _agree_failed(ctx: DistContext, err: BaseException | None) -> bool:
    return ctx.all_sum(1.0 if err is not None else 0.0) > 0


def save(root: Path, state: TrainState, model: torch.nn.Module, optimizer, extra: dict, ctx: DistContext,
         keep: int) -> Path:
    """Collective: every rank calls it. Returns the checkpoint folder; raises CheckpointWriteError on every rank
    when any rank failed to write (the temporary folder is removed, earlier checkpoints stay)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    previous = latest_checkpoint(root)
    final, tmp = root / f"step-{state.step:07d}", root / f".tmp-step-{state.step:07d}-sharded"
    err: BaseException | None = None
    if ctx.is_main:
        try:
            final, tmp = begin(root, state.step, "sharded")
        except OSError as e:
            err = e
    if not _agree_failed(ctx, err):
        try:
            msd, osd = get_state_dict(model, optimizer, options=_options())
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp))
            save_rng(tmp / f"rng-{ctx.rank}.pt")
        except Exception as e:  # noqa: BLE001 -- DCP wraps each rank's OSError in its CheckpointException
            err = e
        if not _agree_failed(ctx, err) and ctx.is_main:
            try:
                atomic_write_json(tmp / "state.json", state_record(state, {**extra, "world_size": ctx.world}))
                publish(tmp, final, keep)
            except OSError as e:
                err = e
    if _agree_failed(ctx, err):
        if ctx.is_main:
            abandon(tmp)
        raise write_failed(final, err or OSError("another rank failed to write its shard"), previous)
    return final


def load(path: Path, model: torch.nn.Module, optimizer, ctx: DistContext) -> tuple[TrainState, dict]:
    """Collective: read this rank's shards of the model (trainable part) and optimizer, and its RNG state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    state, meta = read_state(path)
    check_layout(path, sharded=True, world=ctx.world)
    msd, osd = get_state_dict(model, optimizer, options=_options())
    blob = {"model": msd, "optim": osd}
    dcp.load(blob, checkpoint_id=str(path))
    # not strict: the frozen base is not in the checkpoint (it is the base on disk); every trainable key must be
    keys = set_state_dict(model, optimizer, model_state_dict=blob["model"], optim_state_dict=blob["optim"],
                          options=_options(strict=False))
    missing = [k for k in keys.missing_keys if k in msd] + list(keys.unexpected_keys)
    if missing:
        raise ValueError(f"checkpoint and model disagree on {missing[:3]}")
    set_rng_state(torch.load(path / f"rng-{ctx.rank}.pt", weights_only=True))
    meta.pop("world_size", None)
    return state, meta


def check_layout(path: Path, sharded: bool, world: int) -> None:
    """Refuse, by name, to resume a sharded checkpoint unsharded (or with another process count) and vice versa."""
    written = (path / ".metadata").is_file()
    if written and not sharded:
        raise TunewiseError(f"{path} is a sharded (fsdp) checkpoint", "resume it under torchrun with "
                            "train.distributed: fsdp and the process count that wrote it")
    if sharded and not written:
        raise TunewiseError(f"{path} was written by one process or under ddp, not sharded",
                            "resume it the way it was started (without train.distributed: fsdp under torchrun)")
    ranks = len(list(path.glob("rng-*.pt")))
    if sharded and ranks != world:
        raise TunewiseError(f"{path} was written by {ranks} processes; this run has {world}",
                            f"resume it with torchrun --nproc-per-node {ranks} (over all nodes)")


def gather_for_save(model: torch.nn.Module, method_name: str) -> dict[str, torch.Tensor]:
    """Collective: the whole (LoRA: adapter) state dict on rank 0's CPU, {} on the other ranks."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(
        full_state_dict=True, cpu_offload=True, ignore_frozen_params=method_name != "full"))
