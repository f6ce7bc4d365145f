"""Summed cross-entropy over a (rows x vocab) logits tensor that keeps one vocab-sized tensor instead of three, and
one that also runs the output projection, chunk by chunk, so that the full logits never exist.

`F.cross_entropy` keeps its log-softmax output for backward, and backward then allocates two more tensors of that size
(the gradient of the log-softmax, then of the logits) while every activation of the model is still alive: on a 49k
vocabulary that is ~200 KB per target token, the largest transient of a small model's step. Here forward turns the
logits into their own gradient in place (softmax minus the one-hot target) and keeps only that; backward scales it.
The logits tensor is overwritten, so it is done only on a tensor no other autograd node keeps (the fresh output of
the output projection or of a dtype cast), and on a copy otherwise.
"""

from __future__ import annotations

import torch

from tunewise.defaults import LOSS_CHUNK_BYTES, loss_chunk_rows

# autograd nodes that keep their inputs, never their output: a tensor they produced can be overwritten. An unsafe
# view is aten's own alias of a tensor it just made (a 3-D matmul's output, the copy `reshape` takes of a slice).
_OUTPUT_NOT_KEPT = {"MmBackward0", "AddmmBackward0", "ToCopyBackward0", "UnsafeViewBackward0"}


def _to_gradient_(logits: torch.Tensor, targets: torch.Tensor, keep_rows: torch.Tensor | None) -> torch.Tensor:
    """Overwrite fp32 `logits` (rows, vocab) with d(summed loss)/d(logits) = softmax - one-hot target, and return
    the per-row loss terms (0 on ignored rows). No second vocab-sized tensor is made."""
    index = targets.clamp(min=0)[:, None]  # ignored rows point at column 0, then are zeroed
    target_logit = logits.gather(1, index).squeeze(1)
    row_max = logits.amax(dim=1, keepdim=True)
    logits.sub_(row_max).exp_()  # exp(x - max), in place
    row_sum = logits.sum(dim=1, keepdim=True)
    logits.div_(row_sum)  # softmax
    terms = (row_max + row_sum.log()).squeeze(1) - target_logit
    logits.scatter_add_(1, index, torch.full_like(target_logit, -1.0)[:, None])
    if keep_rows is not None:
        ignored = ~keep_rows
        terms = terms.masked_fill(ignored, 0.0)
        logits.masked_fill_(ignored[:, None], 0.0)
    return terms


def _spend(ctx, name: str) -> tuple:
    """The gradients forward kept, handed out once: backward scales them in place, so a second backward
    (retain_graph) would scale them twice; it is refused instead."""
    if ctx.spent:
        raise RuntimeError(f"{name}'s backward scales its kept gradient in place: it runs once (no retain_graph)")
    ctx.spent = True
    return ctx.saved_tensors


class _SummedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, keep_rows: torch.Tensor | None, in_place: bool):
        grad = logits if in_place else logits.clone()
        terms = _to_gradient_(grad, targets, keep_rows)
        ctx.save_for_backward(grad)
        ctx.spent = False
        return terms.sum()

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = _spend(ctx, "summed_cross_entropy")
        return grad.mul_(grad_loss), None, None, None


def summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """sum over rows of -log softmax(logits)[target], as `F.cross_entropy(logits, targets, ignore_index, reduction=
    "sum")`; logits (rows, vocab) in fp32, targets (rows,). The logits' values are not to be read afterwards."""
    keep_rows = None if ignore_index is None else targets != ignore_index
    return _SummedCrossEntropy.apply(logits, targets, keep_rows, _may_overwrite(logits))


def _may_overwrite(logits: torch.Tensor) -> bool:
    """Whether `logits` is a tensor of its own that no autograd node keeps for backward."""
    if not logits.requires_grad:
        return False  # a caller's tensor outside autograd (e.g. evaluation): leave it intact
    return logits._base is None and type(logits.grad_fn).__name__ in _OUTPUT_NOT_KEPT


class _SummedProjectedCrossEntropy(torch.autograd.Function):
    """Output projection and cross-entropy in one: forward computes the gradients of hidden (and weight) chunk by
    chunk, so no more than one chunk of logits exists at a time; backward only scales them."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int):
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        compute = torch.promote_types(weight.dtype, torch.float32)  # bf16 / fp16 logits go to fp32
        total = hidden.new_zeros((), dtype=compute)
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start:start + chunk_rows]
            logits = (h @ weight.t()).to(compute)
            total += _to_gradient_(logits, targets[start:start + chunk_rows], None).sum()
            g = logits.to(weight.dtype)  # what autograd would hand the projection after a dtype cast
            torch.mm(g, weight, out=grad_hidden[start:start + chunk_rows])
            if grad_weight is not None:
                grad_weight.addmm_(g.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.spent = False
        return total

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = _spend(ctx, "summed_projected_cross_entropy")
        grad_loss = grad_loss.to(grad_hidden.dtype)
        return grad_hidden.mul_(grad_loss), None if grad_weight is None else grad_weight.mul_(grad_loss), None, None


def summed_projected_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                   chunk_bytes: int = LOSS_CHUNK_BYTES) -> torch.Tensor:
    """summed_cross_entropy(hidden @ weight.T, targets) for hidden (..., dim), weight (vocab, dim), targets (rows,)
    with no ignored rows, without ever holding all the logits: on a 49k vocabulary the logits of 500 target tokens
    are ~100 MB, the largest tensor alive at the start of a small model's backward."""
    rows = loss_chunk_rows(weight.shape[0], chunk_bytes)
    return _SummedProjectedCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets, rows)
