"""Packing (`data.packing: true`): several examples share one row of at most max_seq_len tokens.

Nothing crosses an example boundary, so a packed row trains exactly as its examples would one by one:
- position ids restart at 0 for every example;
- attention is block-diagonal (each token sees only earlier tokens of its own example);
- the first token of every example is not a target (as position 0 of an unpacked row never is), so no example
  learns to predict another's first token from its own last one.

Rows are filled best-fit over the examples sorted longest first (deterministic). The model gets the mask in the
form its attention implementation takes: a boolean 4D mask for SDPA (True = attend), an additive float mask for
eager attention, and no mask but the restarting position ids for flash attention (which finds the example
boundaries from them).
"""

from __future__ import annotations

import bisect

import torch

from tunewise.data.formats import IGNORE, Example


def pack(examples: list[Example], capacity: int) -> list[Example]:
    """Packed rows of at most `capacity` tokens; each row's `segments` lists its examples' lengths in order."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (tokens left, row index), sorted: best fit = first with enough room
    for i in order:
        n = len(examples[i].input_ids)
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            left, row = free.pop(k)
        else:
            left, row = capacity, len(rows)
            rows.append([])
        rows[row].append(i)
        if left - n > 0:
            bisect.insort(free, (left - n, row))
    return [_row([examples[i] for i in members]) for members in rows]


def _row(members: list[Example]) -> Example:
    ids: list[int] = []
    labels: list[int] = []
    for e in members:
        ids += e.input_ids
        labels += [IGNORE] + e.labels[1:]  # an example's first token is never predicted (from the previous one)
    return Example(ids, labels, members[0].line, segments=[len(e.input_ids) for e in members])


def packed_collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded packed rows: input_ids, labels, position_ids and a boolean (batch, 1, seq, seq) mask."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(examples), width), dtype=torch.long)
    segment = torch.full((len(examples), width), -1, dtype=torch.long)  # -1 = padding
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        start = 0
        for k, length in enumerate(e.segments or [n]):
            positions[row, start:start + length] = torch.arange(length)
            segment[row, start:start + length] = k
            start += length
    same = segment[:, :, None] == segment[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = same & causal & (segment[:, :, None] >= 0)
    allowed |= torch.eye(width, dtype=torch.bool)  # a padding position sees itself: no all-masked softmax row
    return {"input_ids": ids, "attention_mask": allowed[:, None], "labels": labels, "position_ids": positions}


def forward_inputs(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                   causal_lm: bool = False) -> dict[str, torch.Tensor]:
    """The model's keyword inputs for a batch: a packed batch's mask in the form the attention takes, and no mask
    for a right-padded causal LM batch (`causal_lm`: the model attends causally and padding is never a target)."""
    mask = batch["attention_mask"]
    if mask.dim() != 4:
        if causal_lm and is_right_padded(mask):
            # Causal attention already hides the padding after each real token. Without a mask SDPA runs its causal
            # kernel and keeps grouped key/value heads unrepeated: on SmolLM2 (9 query, 3 kv heads) that is 2 x 384
            # fewer floats per token and layer kept for backward, and no masked blocks computed.
            return {"input_ids": batch["input_ids"]}
        return {"input_ids": batch["input_ids"], "attention_mask": mask}
    impl = getattr(getattr(getattr(model, "module", model), "config", None), "_attn_implementation", None) or "sdpa"
    out = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    if impl.startswith("flash"):
        return out  # flash attention splits the row at every position-id restart
    if impl == "eager":
        # added to the attention scores (upcast to float32 when the scores are lower precision)
        mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(
            ~mask, torch.finfo(torch.float32).min)
    return {**out, "attention_mask": mask}


def is_right_padded(mask: torch.Tensor) -> bool:
    """Whether every row of a (batch, seq) 0/1 mask is ones then zeros (no real token after a padded one)."""
    return bool(torch.equal(mask.cumprod(dim=1), mask))
