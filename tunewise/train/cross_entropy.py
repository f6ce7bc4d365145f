"""Summed cross-entropy over a (rows x vocab) logits tensor that keeps one vocab-sized tensor instead of three.

`F.cross_entropy` keeps its log-softmax output for backward, and backward then allocates two more tensors of that size
(the gradient of the log-softmax, then of the logits) while every activation of the model is still alive: on a 49k
vocabulary that is ~200 KB per target token, the largest transient of a small model's step. Here forward turns the
logits into their own gradient in place (softmax minus the one-hot target) and keeps only that; backward scales it.
The logits tensor is overwritten, so it is done only on a tensor no other autograd node keeps (the fresh output of
the output projection or of a dtype cast), and on a copy otherwise.
"""

from __future__ import annotations

import torch

# autograd nodes that keep their inputs, never their output: a tensor they produced can be overwritten. An unsafe
# view is aten's own alias of a tensor it just made (a 3-D matmul's output, the copy `reshape` takes of a slice).
_OUTPUT_NOT_KEPT = {"MmBackward0", "AddmmBackward0", "ToCopyBackward0", "UnsafeViewBackward0"}


class _SummedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, keep_rows: torch.Tensor | None, in_place: bool):
        grad = logits if in_place else logits.clone()
        index = targets.clamp(min=0)[:, None]  # ignored rows point at column 0, then are zeroed
        target_logit = grad.gather(1, index).squeeze(1)
        row_max = grad.amax(dim=1, keepdim=True)
        grad.sub_(row_max).exp_()  # exp(x - max), in place: no second vocab-sized tensor
        row_sum = grad.sum(dim=1, keepdim=True)
        grad.div_(row_sum)  # softmax
        lse = (row_max + row_sum.log()).squeeze(1)
        terms = lse - target_logit
        grad.scatter_add_(1, index, torch.full_like(target_logit, -1.0)[:, None])
        if keep_rows is not None:
            ignored = ~keep_rows
            terms = terms.masked_fill(ignored, 0.0)
            grad.masked_fill_(ignored[:, None], 0.0)
        ctx.save_for_backward(grad)
        ctx.spent = False
        return terms.sum()

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.spent:
            raise RuntimeError("summed_cross_entropy's backward scales its kept gradient in place: it runs once "
                               "(no retain_graph)")
        ctx.spent = True
        (grad,) = ctx.saved_tensors
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
