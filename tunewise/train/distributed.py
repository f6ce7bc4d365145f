"""torchrun / DistributedDataParallel on an existing engine (gloo on CPU, NCCL on GPU); nothing home-made."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def all_sum(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def launched_rank() -> int:
    """This process's global rank as torchrun set it (0 outside torchrun), readable before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def init_from_env(device_type: str) -> DistContext:
    """Join the process group torchrun set up (WORLD_SIZE > 1), else a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    return ctx


def wrap(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    if not ctx.enabled or isinstance(model, FSDPModule):  # FSDP shards and syncs by itself (fsdp.shard)
        return model
    device_ids = [ctx.local_rank] if next(model.parameters()).device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel) \
        else model


def ranks_identical(params: list[torch.nn.Parameter], ctx: DistContext) -> bool:
    """Do all ranks hold bit-identical trainable weights? (DDP should guarantee it; we check.)"""
    # one parameter at a time: a float64 copy of the whole model would double the run's peak memory
    digest = torch.zeros(2, dtype=torch.float64)
    for p in params:
        x = p.detach().double().cpu()
        digest += torch.stack([x.sum(), (x * x).sum()])
    gathered = [torch.zeros_like(digest) for _ in range(ctx.world)]
    dist.all_gather(gathered, digest)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def from_main(ctx: DistContext, compute):
    """`compute()` run on rank 0 only, its (picklable) result given to every rank."""
    value = compute() if ctx.is_main else None
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_floats(ctx: DistContext, value: float) -> list[float]:
    """`value` from every rank, in rank order."""
    if not ctx.enabled:
        return [value]
    t = torch.tensor([value], dtype=torch.float64)
    out = [torch.zeros_like(t) for _ in range(ctx.world)]
    dist.all_gather(out, t)
    return [float(x.item()) for x in out]


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
