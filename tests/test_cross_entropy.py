"""The lean summed cross-entropy (tunewise/train/cross_entropy.py) equals F.cross_entropy and keeps one tensor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunewise.train.cross_entropy import summed_cross_entropy


def _logits_from_a_projection(rows=7, vocab=50, dtype=torch.float64):
    torch.manual_seed(0)
    hidden = torch.randn(rows, 6, dtype=dtype, requires_grad=True)
    weight = torch.randn(vocab, 6, dtype=dtype, requires_grad=True)
    return hidden, weight


@pytest.mark.parametrize("ignore", [False, True])
def test_loss_and_gradients_equal_torch_cross_entropy(ignore):
    hidden, weight = _logits_from_a_projection()
    targets = torch.randint(0, 50, (7,))
    if ignore:
        targets[[1, 4]] = -100

    def run(fn):
        hidden.grad = weight.grad = None
        loss = fn(hidden @ weight.t(), targets)
        (loss / 3).backward()  # a scaled loss, as the loop divides by the global target count
        return loss.detach(), hidden.grad.clone(), weight.grad.clone()

    ours = run(lambda lg, t: summed_cross_entropy(lg, t, ignore_index=-100 if ignore else None))
    ref = run(lambda lg, t: F.cross_entropy(lg, t, ignore_index=-100, reduction="sum"))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-12)


def test_a_projection_output_becomes_its_own_gradient_and_nothing_else_is_overwritten():
    hidden, weight = _logits_from_a_projection(dtype=torch.float32)
    targets = torch.randint(0, 50, (7,))
    logits = hidden @ weight.t()
    seen = {}
    logits.register_hook(lambda g: seen.update(ptr=g.data_ptr()))
    ptr = logits.data_ptr()
    summed_cross_entropy(logits, targets).backward()
    assert seen["ptr"] == ptr  # the gradient lives in the logits' own storage: no second vocab-sized tensor

    # the all-logits path: a (batch, seq, vocab) matmul output, its last position sliced off and flattened (a copy
    # that reshape takes) is overwritten too, not copied once more
    rows = torch.randn(2, 4, 6, requires_grad=True)
    shifted = (rows @ weight.t())[:, :-1].reshape(-1, 50)
    shifted.register_hook(lambda g: seen.update(shifted=g.data_ptr()))
    ptr = shifted.data_ptr()
    summed_cross_entropy(shifted, targets[:6]).backward()
    assert seen["shifted"] == ptr

    # an output that its producer keeps for backward (tanh keeps its result) is left intact, and still exact
    hidden.grad = weight.grad = None
    capped = torch.tanh(hidden @ weight.t())
    before = capped.detach().clone()
    summed_cross_entropy(capped, targets).backward()
    assert torch.equal(capped.detach(), before)
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    F.cross_entropy(torch.tanh(hidden @ weight.t()), targets, reduction="sum").backward()
    assert torch.allclose(grads[0], hidden.grad, atol=1e-5) and torch.allclose(grads[1], weight.grad, atol=1e-5)


def test_logits_outside_autograd_are_left_intact():
    logits = torch.randn(4, 9)
    before = logits.clone()
    loss = summed_cross_entropy(logits, torch.tensor([0, 3, 8, 2]))
    assert torch.equal(logits, before)
    assert torch.allclose(loss, F.cross_entropy(before, torch.tensor([0, 3, 8, 2]), reduction="sum"))


def test_a_second_backward_is_refused_not_silently_wrong():
    hidden, weight = _logits_from_a_projection()
    loss = summed_cross_entropy(hidden @ weight.t(), torch.randint(0, 50, (7,)))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        loss.backward()


@pytest.mark.parametrize("weight_grad", [True, False])
def test_projected_loss_equals_projection_then_cross_entropy_chunk_by_chunk(weight_grad):
    from tunewise.train.cross_entropy import summed_projected_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(2, 37, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 6, dtype=torch.float64, requires_grad=weight_grad)
    targets = torch.randint(0, 50, (74,))

    def run(fn):
        hidden.grad = weight.grad = None
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.shape) or t, lambda t: t):
            loss = fn()
        (loss / 3).backward()
        return loss.detach(), hidden.grad.clone(), weight.grad.clone() if weight_grad else None, kept

    # chunks of 10 rows: 8 chunks, the last one short
    ours = run(lambda: summed_projected_cross_entropy(hidden, weight, targets, chunk_bytes=4 * 50 * 10))
    ref = run(lambda: F.cross_entropy((hidden @ weight.t()).reshape(-1, 50), targets, reduction="sum"))
    for a, b in zip(ours[:3], ref[:3]):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-12, rtol=1e-12)
    # nothing of the vocabulary's size per row is kept for backward: only the gradients of hidden (and weight)
    assert all(shape[-1] != 50 or shape == weight.shape for shape in ours[3])


def test_projected_loss_outside_autograd_computes_no_weight_gradient():
    from tunewise.train.cross_entropy import summed_projected_cross_entropy

    hidden, weight = torch.randn(5, 6), torch.randn(50, 6, requires_grad=True)
    targets = torch.randint(0, 50, (5,))
    with torch.no_grad():
        loss = summed_projected_cross_entropy(hidden, weight, targets)
    assert torch.allclose(loss, F.cross_entropy(hidden @ weight.detach().t(), targets, reduction="sum"))


def test_projected_loss_refuses_a_second_backward():
    from tunewise.train.cross_entropy import summed_projected_cross_entropy

    hidden = torch.randn(5, 6, requires_grad=True)
    loss = summed_projected_cross_entropy(hidden, torch.randn(50, 6), torch.randint(0, 50, (5,)))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        loss.backward()


def test_projected_loss_in_bf16_computes_the_loss_in_fp32_and_returns_bf16_gradients():
    # the GPU path: bf16 weights and activations; each chunk's logits go to fp32 for the softmax, as `.float()` did
    from tunewise.train.cross_entropy import summed_projected_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(9, 6).bfloat16().requires_grad_()
    weight = torch.randn(50, 6).bfloat16().requires_grad_()
    targets = torch.randint(0, 50, (9,))
    loss = summed_projected_cross_entropy(hidden, weight, targets, chunk_bytes=4 * 50 * 4)
    assert loss.dtype == torch.float32
    loss.backward()
    assert hidden.grad.dtype == weight.grad.dtype == torch.bfloat16
    h, w = hidden.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
    ref = F.cross_entropy((h @ w.t()).bfloat16().float(), targets, reduction="sum")
    ref.backward()
    assert torch.allclose(loss, ref, rtol=1e-3)
    assert torch.allclose(hidden.grad.float(), h.grad, rtol=0.05, atol=0.05)
    assert torch.allclose(weight.grad.float(), w.grad, rtol=0.05, atol=0.05)
