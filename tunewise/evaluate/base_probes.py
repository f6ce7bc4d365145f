"""Retention probes built for a particular base, so they mean something on any model:

    knowledge  short factual questions (tunewise/data/knowledge_items.py) asked as chat messages, scored by
               log-likelihood, no generation: is the right answer, as the assistant's turn through the chat
               template, still the most likely among answers of the same kind from the item table? Only the items
               the base ranks right are kept, so the score is the share of what the base knew that the tuned model
               still knows (1.0 for the base by construction), whatever format the model now answers in
    follows    the same questions answered by greedy generation, right when the reply contains the answer: only
               the items the base answers so are kept; this one drops when the model stops answering in plain
               words (format interference) as well as when it forgets
    kl         mean next-token KL divergence from the base to the model over generic instructions and the base's
               own greedy answers to them: drift in nats per token, 0 for the base

`load_probe` builds any probe by name: these three for a base, the others from tunewise.tasks.probes.

Each is built once per base (its weights' fingerprint) and kept in the tunewise cache, so "before" and "after"
are measured on the same items even across processes. Building needs the base model; when the caller is not
running the base it is loaded for the purpose.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from tunewise.data import knowledge_items as bank  # read at call time: a test may slice the table
from tunewise.data.formats import prompt_ids
from tunewise.data.knowledge_items import knowledge_messages
from tunewise.errors import TunewiseError
from tunewise.evaluate.generation import greedy_generate
from tunewise.evaluate.loglik import answer_logprobs, coarse_kl
from tunewise.fileio import atomic_write_bytes, atomic_write_json, cache_root
from tunewise.models import base_fingerprint, load_base
from tunewise.tasks.probes import (
    BUILTIN_PROBES,
    KL_TOLERANCE,
    MODEL_AGNOSTIC_PROBES,
    Probe,
    arithmetic_probe,
    lm_probe,
    user_probe,
)
from tunewise.tasks.scorers import ContainsScorer

KNOWLEDGE_MAX_NEW_TOKENS = 16
KNOWLEDGE_KEEP = 128  # known items to find; more than any probe limit, far cheaper than asking all of them
KNOWLEDGE_ORDER_SEED = 0
KNOWLEDGE_CANDIDATES = 8  # the right answer and 7 others of its category
KL_TOP_K = 64
KL_MAX_NEW_TOKENS = 48
# Generic requests an assistant answers in a few sentences: no task of ours and no fine-tuning data asks them.
GENERIC_INSTRUCTIONS = (
    "Write a short poem about the sea.",
    "Explain what a computer does, in two sentences.",
    "Give me three tips for sleeping better.",
    "What should I pack for a weekend hiking trip?",
    "Describe a cat to someone who has never seen one.",
    "Why do leaves change colour in autumn?",
    "Write a polite email declining a meeting invitation.",
    "What is the difference between weather and climate?",
    "Suggest a name for a small bakery and explain it.",
    "How do I make a cup of tea?",
    "Tell me a fun fact about the Moon.",
    "What are the benefits of reading books?",
    "Summarise the story of Little Red Riding Hood.",
    "How can I stay focused while studying?",
    "Write a haiku about winter.",
    "What does a librarian do?",
)


def _cache_file(kind: str, base: str, suffix: str) -> Path:
    return cache_root() / "probes" / f"{kind}-{base_fingerprint(base)}{suffix}"


def _base_model(base: str, model, tokenizer):
    """The model to build a probe from: the caller's, when it is the base at full precision, else the base
    loaded for it (a QLoRA run's 4-bit base is not the reference every method is measured against)."""
    if model is not None and not getattr(model, "is_loaded_in_4bit", False):
        return model, tokenizer
    return load_base(base)


def follows_items(base: str, model=None, tokenizer=None, batch_size: int = 16) -> list[tuple[str, str]]:
    """(question, answer) pairs the base's greedy reply answers correctly, built once per base and cached."""
    cache = _cache_file("follows", base, ".json")
    if cache.is_file():
        kept = json.loads(cache.read_text())["kept"]
        return [(bank.KNOWLEDGE_ITEMS[i][1], bank.KNOWLEDGE_ITEMS[i][2]) for i in kept]
    model, tokenizer = _base_model(base, model, tokenizer)
    order = _item_order()
    scorer = ContainsScorer()
    asked: list[int] = []
    kept: list[int] = []
    for start in range(0, len(order), 4 * batch_size):
        chunk = order[start: start + 4 * batch_size]
        items = [bank.KNOWLEDGE_ITEMS[i] for i in chunk]
        answers = greedy_generate(model, tokenizer, [knowledge_messages(q) for _, q, _ in items],
                                  max_new_tokens=KNOWLEDGE_MAX_NEW_TOKENS, stop=["\n"], batch_size=batch_size)
        asked += chunk
        kept += [i for i, (_, _, a), out in zip(chunk, items, answers, strict=True) if scorer.score(out, a).correct]
        if len(kept) >= KNOWLEDGE_KEEP:
            break
    atomic_write_json(cache, _kept_record(base, asked, kept))
    return [(bank.KNOWLEDGE_ITEMS[i][1], bank.KNOWLEDGE_ITEMS[i][2]) for i in kept]


def _item_order() -> list[int]:
    """A fixed shuffle of the item table: it mixes the categories, so the first items kept are not all capitals."""
    order = list(range(len(bank.KNOWLEDGE_ITEMS)))
    random.Random(KNOWLEDGE_ORDER_SEED).shuffle(order)
    return order


def _kept_record(base: str, asked: list[int], kept: list[int]) -> dict:
    """What a knowledge cache file holds: the items kept, and how many of each category the base knew."""
    by_category: dict[str, list[int]] = {}
    for i in asked:
        counts = by_category.setdefault(bank.KNOWLEDGE_ITEMS[i][0], [0, 0])
        counts[0] += 1
        counts[1] += i in kept
    return {"base": base, "asked": len(asked), "kept": kept,
            "known_by_category": {c: f"{k}/{n}" for c, (n, k) in by_category.items()}}


def candidates(index: int, k: int = KNOWLEDGE_CANDIDATES) -> list[str]:
    """Item `index`'s right answer first, then up to k - 1 other answers of its category from the item table
    (a fixed draw per item; no two the same, none the right answer in other case or spacing)."""
    category, _, right = bank.KNOWLEDGE_ITEMS[index]
    seen = {right.strip().lower()}
    others = []
    for c, _, answer in bank.KNOWLEDGE_ITEMS:
        if c == category and answer.strip().lower() not in seen:
            seen.add(answer.strip().lower())
            others.append(answer)
    return [right] + random.Random(KNOWLEDGE_ORDER_SEED * 100_003 + index).sample(others, min(k - 1, len(others)))


def ranked_first(model, tokenizer, questions: list[str], choices: list[list[str]]) -> list[bool]:
    """For each question, is its first choice strictly the most likely answer (log-likelihood of the assistant's
    turn through the chat template)? One forward per question, so a question's numbers never depend on which
    others are asked with it (the base scores exactly 1.0 on the items it was kept for)."""
    out = []
    for q, options in zip(questions, choices, strict=True):
        asked = knowledge_messages(q)
        lp = answer_logprobs(model, tokenizer, [asked + [{"role": "assistant", "content": a}] for a in options])
        out.append(len(lp) > 1 and lp[0] > max(lp[1:]))
    return out


def knowledge_choices(base: str, model=None, tokenizer=None) -> list[tuple[str, list[str]]]:
    """(question, [right answer, others of its kind]) for the items the base ranks right, built once and cached."""
    cache = _cache_file("knowledge-loglik", base, ".json")
    if cache.is_file():
        return [(bank.KNOWLEDGE_ITEMS[i][1], candidates(i)) for i in json.loads(cache.read_text())["kept"]]
    model, tokenizer = _base_model(base, model, tokenizer)
    was_training = model.training
    asked: list[int] = []
    kept: list[int] = []
    try:
        for i in _item_order():
            asked.append(i)
            if ranked_first(model, tokenizer, [bank.KNOWLEDGE_ITEMS[i][1]], [candidates(i)])[0]:
                kept.append(i)
            if len(kept) >= KNOWLEDGE_KEEP:
                break
    finally:
        model.train(was_training)
    atomic_write_json(cache, _kept_record(base, asked, kept))
    return [(bank.KNOWLEDGE_ITEMS[i][1], candidates(i)) for i in kept]


@dataclass
class KlReference:
    """The base's side of the kl probe: each instruction's prompt + greedy answer ids, where the answer starts,
    and the base's top-k next-token log-probabilities at every answer position."""

    ids: list[list[int]]
    starts: list[int]
    top_ids: list[torch.Tensor]  # (answer length, K) int32
    top_logp: list[torch.Tensor]  # (answer length, K) float32


@torch.no_grad()
def _answer_logits(model, ids: list[int], start: int) -> torch.Tensor:
    """Logits at the positions that predict the answer tokens ids[start:]."""
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([ids], device=device)).logits[0]
    return out[start - 1: len(ids) - 1].float().cpu()


def kl_reference(base: str, model=None, tokenizer=None) -> KlReference:
    cache = _cache_file("kl", base, ".pt")
    if cache.is_file():
        return KlReference(**torch.load(cache, weights_only=True))
    model, tokenizer = _base_model(base, model, tokenizer)
    prompts = [[{"role": "user", "content": text}] for text in GENERIC_INSTRUCTIONS]
    answers = greedy_generate(model, tokenizer, prompts, max_new_tokens=KL_MAX_NEW_TOKENS, batch_size=8)
    ref = KlReference([], [], [], [])
    for prompt, answer in zip(prompts, answers, strict=True):
        p = prompt_ids(prompt, tokenizer)
        a = tokenizer(answer, add_special_tokens=False)["input_ids"][:KL_MAX_NEW_TOKENS] or [tokenizer.eos_token_id]
        top = torch.log_softmax(_answer_logits(model, p + a, len(p)), dim=-1).topk(KL_TOP_K, dim=-1)
        ref.ids.append(p + a)
        ref.starts.append(len(p))
        ref.top_ids.append(top.indices.to(torch.int32))
        ref.top_logp.append(top.values)
    buf = io.BytesIO()
    torch.save(ref.__dict__, buf)
    atomic_write_bytes(cache, buf.getvalue())
    return ref


def kl_score(model, ref: KlReference) -> float:
    """Mean coarse KL(base || model) per answer token, pooled over all instructions."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for ids, start, top_ids, top_logp in zip(ref.ids, ref.starts, ref.top_ids, ref.top_logp, strict=True):
            kl = coarse_kl(top_ids, top_logp, _answer_logits(model, ids, start))
            total += float(kl.sum())
            count += kl.numel()
    finally:
        model.train(was_training)
    return round(total / max(count, 1), 6)  # micro-nats of float noise would read as drift from a zero base


def _base_probe(name: str, limit: int, base: str, base_model, base_tokenizer) -> Probe:
    """knowledge, follows or kl, built for `base`."""
    if name == "kl":
        return Probe("kl", "kl", "kl", False, kl_reference=kl_reference(base, base_model, base_tokenizer),
                     abs_tolerance=KL_TOLERANCE)
    if name == "knowledge":
        chosen = knowledge_choices(base, base_model, base_tokenizer)[:limit]
        items = [(q, options[0]) for q, options in chosen]
    else:
        items = follows_items(base, base_model, base_tokenizer)[:limit]
    if not items:
        raise TunewiseError(f"the base '{base}' knew none of the knowledge questions ({name} probe), so there is "
                            "nothing to retain", f"drop the {name} probe for this base")
    if name == "knowledge":
        return Probe("knowledge", "choice", "accuracy", True, [q for q, _ in items], [a for _, a in items],
                     choices=[options for _, options in chosen])
    return Probe("follows", "generate", "accuracy", True, [knowledge_messages(q) for q, _ in items],
                 [a for _, a in items], scorer="contains", max_new_tokens=KNOWLEDGE_MAX_NEW_TOKENS)


def load_probe(name: str, limit: int, base: str | None = None, base_model=None, base_tokenizer=None) -> Probe:
    """A probe by name; `knowledge`, `follows` and `kl` are built for `base` (from base_model when the caller runs it)."""
    if name == "arithmetic":
        return arithmetic_probe(limit)
    if name == "lm":
        return lm_probe(limit)
    if name in MODEL_AGNOSTIC_PROBES:
        if base is None:
            raise TunewiseError(f"the '{name}' probe is built for a base model, and none was named",
                                "give the base (--base, or the run's config)")
        return _base_probe(name, limit, base, base_model, base_tokenizer)
    p = Path(name).expanduser()
    if p.is_file():
        return user_probe(p, limit)
    raise TunewiseError(f"unknown probe '{name}'",
                        f"use {', '.join(BUILTIN_PROBES)} or the path of a JSONL probe set")
