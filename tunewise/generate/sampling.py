"""Per-row token choice: temperature, top-k, top-p and a seeded draw for each row of one batch, plus logprobs.

Pure tensor math, no model and no threads. Every row has its own settings and its own `torch.Generator`, so a
seeded request draws the same numbers whatever else shares its batch. Temperature 0 is argmax (greedy), the
same choice `model.generate(do_sample=False)` makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

GREEDY_BELOW = 1e-5  # a smaller temperature is argmax (as vLLM does): logits / 1e-30 would overflow to inf


class Constraint(Protocol):
    """A row's token constraint (JSON mode: generate/constrain.py), one object per row: it has state."""

    def allowed(self, width: int) -> torch.Tensor: ...  # (width,) bool: the tokens that may come next

    def advance(self, token: int) -> None: ...  # the row's chosen token


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None
    logprobs: int | None = None  # None = no logprobs; k >= 0 = the chosen token's and the k most likely
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token, bias) added to the logits before the choice
    constraint: Constraint | None = field(default=None, compare=False)  # only its tokens may be chosen

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True)
class TokenChoice:
    token: int
    logprob: float  # of the chosen token under the model's distribution (before temperature / top-k / top-p)
    top: tuple[tuple[int, float], ...] = ()  # the k most likely (token, logprob), most likely first


def make_generator(params: SamplingParams, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A generator for a sampled row: seeded when the request gave a seed, from fresh entropy otherwise."""
    if params.greedy:
        return None
    g = torch.Generator(device=device)
    if params.seed is None:
        g.seed()
    else:
        g.manual_seed(params.seed % 2**64)  # any integer a client sends; torch takes 0 .. 2**64 - 1
    return g


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """(V,) logits scaled by 1/temperature with everything outside top-k and the top-p nucleus set to -inf.

    The nucleus keeps the smallest set of most likely tokens whose probability reaches top_p (at least one)."""
    x = logits.float() / temperature  # (V,)
    if 0 < top_k < x.shape[-1]:
        kth = torch.topk(x, top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True)  # (V,)
        probs = torch.softmax(sorted_x, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above each one
        drop = before >= top_p
        drop[0] = False
        x = x.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return x


def draw(logits: torch.Tensor, generator: torch.Generator) -> int:
    """One token from softmax(logits) by inverse CDF with one uniform from `generator` (deterministic per seed)."""
    probs = torch.softmax(logits, dim=-1)  # (V,)
    cdf = torch.cumsum(probs, dim=-1)
    u = torch.rand((), generator=generator, device=generator.device) * cdf[-1]
    idx = int(torch.searchsorted(cdf, u.reshape(1), right=True).item())
    idx = min(idx, probs.shape[-1] - 1)
    while probs[idx] == 0 and idx > 0:  # u landed on a flat step of the CDF: take the last token with mass
        idx -= 1
    return idx


def biased(logits: torch.Tensor, bias: tuple[tuple[int, float], ...]) -> torch.Tensor:
    """(V,) logits with OpenAI's logit_bias added (-100 all but bans a token, +100 all but forces it)."""
    if not bias:
        return logits
    out = logits.float().clone()
    for tok, b in bias:
        out[tok] += b
    return out


def choose(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator | None]) -> list[TokenChoice]:
    """The next token of each row. logits: (B, V), the last position's, one row per request."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    out: list[TokenChoice] = []
    for i, (p, g) in enumerate(zip(params, generators, strict=True)):
        row = biased(logits[i], p.logit_bias)
        if p.constraint is not None:
            row = row.float().masked_fill(~p.constraint.allowed(row.shape[-1]), float("-inf"))
        if p.greedy:
            tok = int(torch.argmax(row).item())
        else:
            assert g is not None, "a sampled row needs its generator"
            tok = draw(filter_logits(row, p.temperature, p.top_k, p.top_p), g)
        if p.constraint is not None:
            p.constraint.advance(tok)
        top: tuple[tuple[int, float], ...] = ()
        if p.logprobs:
            v, ix = torch.topk(logp[i], min(p.logprobs, logp.shape[-1]))
            top = tuple(zip(ix.tolist(), v.tolist(), strict=True))
        out.append(TokenChoice(tok, float(logp[i, tok]), top))
    return out


def choose_where(logits: torch.Tensor, params: list[SamplingParams],
                 generators: list[torch.Generator | None]) -> list[TokenChoice]:
    """`choose`, without copying the (B, V) logits to the CPU when every row is plain greedy (no logprobs, no
    bias, no constraint): the argmax and its logprob are taken where the logits are, and B pairs come back."""
    if not all(p.greedy and not p.logprobs and not p.logit_bias and p.constraint is None for p in params):
        return choose(logits.float().cpu(), params, generators)
    x = logits.float()  # (B, V)
    tok = torch.argmax(x, dim=-1)  # (B,): the same argmax `choose` takes (first of equal maxima)
    logp = (x.gather(-1, tok[:, None])[:, 0] - torch.logsumexp(x, dim=-1)).tolist()
    return [TokenChoice(t, lp) for t, lp in zip(tok.tolist(), logp, strict=True)]
