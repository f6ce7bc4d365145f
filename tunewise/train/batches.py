"""Length-grouped batches: examples of similar length share a batch, so padding wastes little compute.

The order is a pure function of (seed, epoch), which is what makes resume exact and lets every DDP rank agree on the
global batch without communicating.
"""

from __future__ import annotations

import random

import torch

from tunewise.data.formats import IGNORE, Example
from tunewise.train.packing import packed_collate


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = True,
                  window: int = 50) -> list[list[int]]:
    """Indices of each batch for one epoch: shuffle, sort inside windows of `window` batches, shuffle batches."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        span = batch_size * window
        order = [i for s in range(0, len(order), span)
                 for i in sorted(order[s: s + span], key=lambda j: lengths[j], reverse=True)]
    batches = [order[s: s + batch_size] for s in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def shard_rows(batch: list[int], rank: int, world: int) -> list[int]:
    """This rank's rows of a global batch (every rank sees the same global batch)."""
    return batch[rank::world]


def collate(examples: list[Example], pad_id: int, classification: bool = False) -> dict[str, torch.Tensor]:
    """Right-padded tensors; labels are IGNORE on padding (causal LM) or one class per row (classification).
    Packed rows (data.packing) get position ids and a block-diagonal mask instead (packing.py)."""
    if not classification and any(e.segments for e in examples):
        return packed_collate(examples, pad_id)
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        if not classification:
            labels[row, :n] = torch.tensor(e.labels)
    if classification:
        labels = torch.tensor([e.labels[0] for e in examples], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def target_count(examples: list[Example], classification: bool = False) -> int:
    """How many loss terms a set of examples contributes (the normaliser of a summed loss)."""
    if classification:
        return len(examples)
    return sum(sum(lab != IGNORE for lab in e.labels[1:]) for e in examples)
