"""Log-likelihood scoring: per-text mean token loss (the `lm` probe) and choice scoring by summed log-probability.

Tensor math (`token_logprobs`) is kept apart from batching so it can be tested on hand-made logits.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tunewise.data.formats import IGNORE, Record, encode_record, prompt_ids
from tunewise.hf import context_length


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(token_t | tokens_<t) for t >= 1.

    logits (B, T, V), input_ids (B, T) -> (B, T-1): entry [b, t-1] scores input_ids[b, t].
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    return logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T-1)


def coarse_kl(ref_top_ids: torch.Tensor, ref_top_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(ref || model) per position over the ref's top-k tokens plus one bucket for the rest of the vocabulary.

    ref_top_ids, ref_top_logp (T, K): the reference model's k most likely tokens and their log-probabilities;
    logits (T, V): the model being compared. Merging the tail into one bucket can only lower a KL (the
    data-processing inequality), so this is a lower bound of the full KL that is exact when the reference puts
    all its mass in the top k; it is 0 when the two distributions agree.
    """
    logq = torch.log_softmax(logits.float(), dim=-1).gather(-1, ref_top_ids.long())  # (T, K)
    logp = ref_top_logp.float()
    p_rest = (1 - logp.exp().sum(-1)).clamp_min(1e-12)
    q_rest = (1 - logq.exp().sum(-1)).clamp_min(1e-12)
    top = (logp.exp() * (logp - logq)).sum(-1)
    return (top + p_rest * (p_rest.log() - q_rest.log())).clamp_min(0)


def right_pad(rows: list[list[int]], pad_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, longest), padded on the right: positions stay 0..n-1."""
    width = max(len(x) for x in rows)
    input_ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for r, x in enumerate(rows):
        input_ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[r, : len(x)] = 1
    return input_ids, mask


def _max_len(model, tokenizer) -> int:
    return int(context_length(getattr(model, "config", None)) or tokenizer.model_max_length or 512)


@torch.no_grad()
def mean_token_loss(model, tokenizer, texts: list[str], batch_size: int = 8) -> float:
    """Mean negative log-likelihood per predicted token over all texts (tokens pooled, not texts averaged).

    Texts longer than the model's positions are cut to fit; an empty list gives nan.
    """
    model.eval()
    device = next(model.parameters()).device
    limit = _max_len(model, tokenizer)
    total, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        ids = [prompt_ids(t, tokenizer)[:limit] for t in texts[i: i + batch_size]]
        ids = [x for x in ids if len(x) >= 2]
        if not ids:
            continue
        input_ids, mask = right_pad(ids, tokenizer.pad_token_id)
        input_ids, mask = input_ids.to(device), mask.to(device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        lp = token_logprobs(logits, input_ids)  # (B, T-1)
        m = mask[:, 1:].bool()
        total += float(-(lp * m).sum())
        count += int(m.sum())
    return total / count if count else float("nan")


@torch.no_grad()
def choice_logprobs(model, tokenizer, prompt: str | list[dict], choices: list[str]) -> list[float]:
    """Summed log p(choice | prompt) for each choice (the choice's tokens only), in one batch.

    The prompt is tokenised once and each choice's tokens appended, so every choice is conditioned on
    exactly the same prompt tokens.
    """
    model.eval()
    device = next(model.parameters()).device
    p_ids = prompt_ids(prompt, tokenizer)  # text or chat messages, by the trainer's rule
    if not p_ids:  # an empty prompt: condition on EOS, as at the start of a document
        p_ids = [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0]
    c_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
    input_ids, mask = right_pad([p_ids + c for c in c_ids], tokenizer.pad_token_id)
    lp = token_logprobs(model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits,
                        input_ids.to(device))  # (C, T-1)
    out = []
    for r, c in enumerate(c_ids):
        start = len(p_ids) - 1  # lp[:, t-1] scores token t; the choice starts at token len(p_ids)
        out.append(float(lp[r, start: start + len(c)].sum()))
    return out


@torch.no_grad()
def answer_logprobs(model, tokenizer, conversations: list[list[dict]]) -> list[float]:
    """Summed log p(last assistant turn | the turns before) of each conversation, in one batch: the turn's tokens
    as the trainer renders and trains them (chat template, end-of-turn included), so an answer that is only the
    start of another ("New" for "New Delhi") does not win by being shorter."""
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode_record(Record({"messages": c}, i + 1), "chat", tokenizer, Path("<answers>"))
               for i, c in enumerate(conversations)]
    input_ids, mask = right_pad([ids for ids, _ in encoded], tokenizer.pad_token_id)
    labels, _ = right_pad([lab for _, lab in encoded], IGNORE)
    lp = token_logprobs(model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits,
                        input_ids.to(device)).cpu()  # (B, T-1)
    scored = (labels[:, 1:] != IGNORE) & mask[:, 1:].bool()
    return [float(lp[r][scored[r]].sum()) for r in range(len(encoded))]
