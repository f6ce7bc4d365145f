"""The two retention measures of what a base knows: `knowledge` (log-likelihood of the right answer among
same-kind answers through the chat template, no generation) and `follows` (the greedy reply contains the fact)."""

from __future__ import annotations

import copy

import pytest
import torch

from tunewise.data.knowledge_items import KNOWLEDGE_ITEMS, knowledge_messages
from tunewise.evaluate.base_probes import candidates, load_probe
from tunewise.evaluate.retention import run_probe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tunewise.models import load_base

    model, tok = load_base("tiny")
    return model.eval(), tok


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A fresh probe cache, and probes built from the first 64 items of the table until 4 are known (the tiny
    base was never taught world facts: it knows an item about as often as chance picks it, and asking the whole
    table takes minutes on a CPU)."""
    from tunewise.evaluate import base_probes

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    order = base_probes._item_order()[:64]
    monkeypatch.setattr(base_probes, "_item_order", lambda: order)
    monkeypatch.setattr(base_probes, "KNOWLEDGE_KEEP", 4)


def test_candidates_are_the_right_answer_and_others_of_its_kind():
    for i in (0, 57, len(KNOWLEDGE_ITEMS) - 1):
        options = candidates(i)
        category, _, right = KNOWLEDGE_ITEMS[i]
        kind = {a for c, _, a in KNOWLEDGE_ITEMS if c == category}
        assert options[0] == right and set(options) <= kind and 2 <= len(options) <= 8
        assert len({o.lower() for o in options}) == len(options)
        assert options == candidates(i)  # a fixed draw: before and after see the same candidates


def plant_against(model, tok, question: str, options: list[str]):
    """A copy of the model whose output layer gains a bias of -1e4 on a token that only the right answer's turn
    has (a planted weight update that overwrites that answer's logits and leaves its rivals' alone)."""
    from tunewise.data.formats import Record, encode_record

    def answer_tokens(a: str) -> set[int]:
        ids, labels = encode_record(Record({"messages": knowledge_messages(question) + [
            {"role": "assistant", "content": a}]}, 1), "chat", tok, "<t>")
        return {t for t, lab in zip(ids, labels, strict=True) if lab != -100}

    own = answer_tokens(options[0]) - set().union(*(answer_tokens(o) for o in options[1:]))
    planted = copy.deepcopy(model)
    head = planted.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[sorted(own)[0]] = -1e4
    planted.set_output_embeddings(biased)
    return planted


def test_knowledge_is_one_on_the_base_and_drops_under_a_planted_update(tiny, cache):
    model, tok = tiny
    probe = load_probe("knowledge", 16, base="tiny", base_model=model, base_tokenizer=tok)
    assert probe.kind == "choice" and probe.prompts and probe.references == [c[0] for c in probe.choices]
    assert run_probe(model, tok, probe)["score"] == 1.0  # by construction: kept because the base ranks them right
    planted = plant_against(model, tok, probe.prompts[0], probe.choices[0])
    after = run_probe(planted, tok, probe)
    assert after["n"] == len(probe.prompts) and after["score"] < 1.0
    assert after["score"] == pytest.approx(1 - 1 / len(probe.prompts), abs=1 / len(probe.prompts) + 1e-9)


def test_follows_is_the_greedy_contains_check(tiny, cache):
    model, tok = tiny
    from tunewise.errors import TunewiseError

    try:
        probe = load_probe("follows", 8, base="tiny", base_model=model, base_tokenizer=tok)
    except TunewiseError as e:  # the tiny base was never taught world facts: it may know none
        assert "knew none of the knowledge questions (follows probe)" in str(e)
        return
    assert probe.kind == "generate" and probe.scorer == "contains" and probe.name == "follows"
    assert run_probe(model, tok, probe)["score"] == 1.0


def test_default_probes_measure_both_on_any_other_base():
    from tunewise.tasks.probes import default_probes

    assert default_probes("smollm2") == ["knowledge", "follows", "kl"]
    assert default_probes("tiny") == ["arithmetic", "lm"]
