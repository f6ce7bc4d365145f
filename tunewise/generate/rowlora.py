"""Per-row LoRA for a mixed batch: each row's own A and B gathered and applied as two batched matmuls.

PEFT's mixed-adapter forward (`adapter_names`) loops over the adapters in the batch in every LoRA layer, slicing
the rows of each out and adding them back: with 4 adapters that is 4 small sub-batches per layer per step, and on
a small model those launches cost more than the math. Here every loaded adapter's A / B factors (B scaled) are
stacked once per module, transposed, into (slots, in, R) and (slots, R, out) tensors, zero-padded to the largest
rank R; slot 0 is all zeros (a base row). A forward gathers each row's pair and adds (x @ A_row^T) @ B_row^T with
two `torch.bmm`s. Inside `routing` a PEFT layer's forward is replaced by base layer + that delta (PEFT's own
forward would add nothing: the active adapter is the engine's inert placeholder), which also skips PEFT's
per-call checks; outside it, PEFT's forward runs as usual.

A decoding step (one token per row) does not gather: continuous batching changes the batch's rows every few steps
(a request joins, another leaves, a prefill runs between two steps), and re-gathering each row's pair then copied
more weight bytes per step than the base reads. Instead every loaded adapter's A's sit side by side in one
(in, slots x R) matrix and the B's in one (slots x R, out) matrix: x @ A_all gives every adapter's rank-R product
for every row, a 0/1 mask per batch composition (shared by all modules of the same R) keeps each row's own slot,
and one in-place addmm adds the B side. For one token per row that is a few KB of FLOPs more and no copies; a
prefill (many tokens per row) keeps the gathered bmm, whose FLOPs do not grow with the number of loaded adapters.

Covered: plain linear LoRA (any rank, alpha, rslora, rank / alpha patterns). Anything else (embedding LoRA,
`modules_to_save`, LoRA bias, DoRA or other variants, quantized layers) is not, and the engine sends steps with such
an adapter through PEFT's own mixed-adapter forward instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from tunewise.adapters.forward import (
    adapts,
    factors,
    has_factors,
    lora_layers,
    plain_linear,
    rank,
    saves_modules,
)


def covers(model, adapter: str) -> bool:
    """Can `adapter` be applied per row here (plain linear LoRA only, nothing else in the model)?"""
    if saves_modules(model, adapter):
        return False
    return all(plain_linear(m, adapter) for _, m in lora_layers(model) if adapts(m, adapter))


class RowLoRA:
    """Stacks of the loaded adapters' LoRA weights per module, and the hooks that apply them per row."""

    def __init__(self, model):
        self.model = model
        self.slot: dict[str, int] = {}  # adapter -> slot (0 = no adapter)
        self.stacks: dict[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}  # (S, in, R), (S, R, out)
        self._patched: set[torch.nn.Module] = set()
        self._routing = False
        self._rows: torch.Tensor | None = None  # (B,) slot of each row during a routed forward
        self._rows_key: tuple[int, ...] | None = None
        self._rows_tensor: torch.Tensor | None = None
        self._gathered: dict[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}  # (B, in, R), (B, R, out)
        self.side_by_side: dict[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}  # (in, S*R), (S*R, out)
        self._masks: dict[int, torch.Tensor] = {}  # R -> (B, S*R) 0/1: row i keeps its own slot's R columns

    def rebuild(self, adapters: list[str]) -> None:
        """Restack after a load or an eviction; `adapters` are the loaded ones this class covers."""
        self.slot = {a: i + 1 for i, a in enumerate(adapters)}
        self.stacks, self.side_by_side, self._gathered, self._masks, self._rows_key = {}, {}, {}, {}, None
        for _, m in lora_layers(self.model):
            present = [a for a in adapters if has_factors(m, a)]
            if not present:
                continue
            ref = factors(m, present[0])[0]
            width = max(rank(m, a) for a in present)
            a_stack = torch.zeros(len(adapters) + 1, m.in_features, width, dtype=ref.dtype, device=ref.device)
            b_stack = torch.zeros(len(adapters) + 1, width, m.out_features, dtype=ref.dtype, device=ref.device)
            for a in present:
                lora_a, lora_b, scaling = factors(m, a)
                r = lora_a.shape[0]
                a_stack[self.slot[a], :, :r] = lora_a.T
                b_stack[self.slot[a], :r] = (lora_b * scaling).T
            self.stacks[m] = (a_stack, b_stack)
            slots = len(adapters)
            self.side_by_side[m] = (a_stack[1:].permute(1, 0, 2).reshape(m.in_features, slots * width).contiguous(),
                                    b_stack[1:].reshape(slots * width, m.out_features).contiguous())
        for _, m in lora_layers(self.model):
            if m not in self._patched:
                self._patch(m)

    @contextmanager
    def routing(self, adapters: list[str | None]) -> Iterator[None]:
        """Within this block the model's forward adds each row's own adapter (None = the base)."""
        slots = tuple(self.slot[a] if a is not None else 0 for a in adapters)
        if slots != self._rows_key:  # the batch's rows changed: gather again
            device = next(iter(self.stacks.values()))[0].device if self.stacks else "cpu"
            self._rows_key, self._gathered, self._masks = slots, {}, {}
            self._rows_tensor = torch.tensor(slots, dtype=torch.long, device=device) if any(slots) else None
        self._rows, self._routing = self._rows_tensor, True
        try:
            yield
        finally:
            self._rows, self._routing = None, False

    def _patch(self, module) -> None:
        """Give `module` (a PEFT LoRA layer) a forward that applies per-row LoRA while routing."""
        peft_forward, base = module.forward, module.get_base_layer()
        plain = type(base) is torch.nn.Linear and not base._forward_hooks and not base._forward_pre_hooks

        def forward(x, *args, **kwargs):
            if not self._routing:
                return peft_forward(x, *args, **kwargs)
            # a plain nn.Linear base is called as the function (no module call: this runs 200+ times a step)
            out = F.linear(x, base.weight, base.bias) if plain and not args and not kwargs else base(x, *args, **kwargs)
            rows = self._rows
            if rows is None or module not in self.stacks:
                return out
            if x.dim() == 3 and x.shape[1] == 1 and out.dtype == x.dtype == self.stacks[module][0].dtype:
                # a decoding step (one token per row), adapters in the model's dtype: no gather
                return self._add_side_by_side(module, x, out)
            pair = self._gathered.get(module)
            if pair is None:
                a_stack, b_stack = self.stacks[module]
                pair = self._gathered[module] = (a_stack.index_select(0, rows), b_stack.index_select(0, rows))
            a, b = pair  # (B, in, R), (B, R, out)
            xa = torch.bmm(x if x.dtype == a.dtype else x.to(a.dtype), a)  # (B, T, R)
            if out.dtype == b.dtype and out.dim() == 3:
                return out.baddbmm_(xa, b)  # out += xa @ b in one op
            return out + torch.bmm(xa, b).to(out.dtype)

        module.forward = forward
        self._patched.add(module)

    def _mask(self, rank: int, dtype: torch.dtype) -> torch.Tensor:
        """(B, S*rank) 0/1: column block s (rank wide) is on for the rows routed to slot s + 1."""
        mask = self._masks.get(rank)
        if mask is None:
            rows = self._rows
            block = torch.arange(1, len(self.slot) + 1, device=rows.device).repeat_interleave(rank)
            mask = self._masks[rank] = (rows[:, None] == block[None, :]).to(dtype)
        return mask

    def _add_side_by_side(self, module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out += each row's own (x A^T) B^T for one token per row, from the side-by-side matrices."""
        a_all, b_all = self.side_by_side[module]
        rows, width = x.shape[0], out.shape[-1]
        low = (x.reshape(rows, -1) @ a_all).mul_(self._mask(a_all.shape[1] // len(self.slot), a_all.dtype))
        return out.view(rows, width).addmm_(low, b_all).view(rows, 1, width)
