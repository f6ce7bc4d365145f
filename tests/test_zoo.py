"""The shipped tiny base: integrity against its manifest, a reproducible build, and skills it has learned."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tunewise.fileio import sha256_file
from tunewise.zoo import TINY_DIR
from tunewise.zoo.build import build

pytestmark = pytest.mark.integration


def manifest() -> dict:
    return json.loads((TINY_DIR / "manifest.json").read_text())


def test_shipped_weights_match_the_manifest():
    m = manifest()
    for name, digest in m["sha256"].items():
        assert sha256_file(TINY_DIR / name) == digest, name


def test_loads_offline_both_ways():
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from tunewise.models import load_base

    model, tok = load_base("tiny")
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.float32  # bf16 storage, fp32 compute on CPU
    assert model.num_parameters() == manifest()["parameters"]
    plain = AutoModelForCausalLM.from_pretrained(TINY_DIR)
    assert plain.num_parameters() == manifest()["parameters"]
    assert 4_000_000 <= manifest()["parameters"] <= 6_000_000


def test_build_is_deterministic(tmp_path):
    threads = 2  # as the shipped base is built: two threads must still give the same bytes
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the caller's own setting, which the build must put back
    try:
        a = build(tmp_path / "a", steps=3, docs=400, seed=0, batch=4, seq_len=32, lr=2e-3, threads=threads)
        b = build(tmp_path / "b", steps=3, docs=400, seed=0, batch=4, seq_len=32, lr=2e-3, threads=threads)
        c = build(tmp_path / "c", steps=3, docs=400, seed=1, batch=4, seq_len=32, lr=2e-3, threads=threads)
        after = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(caller_threads)
    assert a["sha256"] == b["sha256"]
    assert a["sha256"]["model.safetensors"] != c["sha256"]["model.safetensors"]
    assert after == (1, False)  # neither deterministic mode nor the thread count outlives the build


@pytest.mark.slow
def test_full_rebuild_reproduces_the_shipped_sha(tmp_path):
    """About 36 minutes on an idle 2-core CPU; the same torch build and thread count give the same bytes."""
    m = manifest()
    t = m["training"]
    out = build(tmp_path / "tiny", steps=t["steps"], docs=m["corpus"]["documents"], seed=m["corpus"]["seed"],
                batch=t["batch"], seq_len=t["seq_len"], lr=t["lr"], threads=t["threads"])
    assert out["sha256"] == m["sha256"]


def test_heldout_loss_is_far_below_an_untrained_model():
    from tunewise.evaluate.loglik import mean_token_loss
    from tunewise.models import load_base
    from tunewise.zoo.build import make_model
    from tunewise.zoo.corpus import heldout_documents

    model, tok = load_base("tiny")
    texts = heldout_documents(40)
    trained = mean_token_loss(model, tok, texts)
    untrained = mean_token_loss(make_model(tok, seed=123), tok, texts)
    assert trained < 1.2 and untrained > 6.0
    assert trained < untrained / 5


def test_completes_template_prompts_and_some_arithmetic():
    from tunewise.evaluate.generation import greedy_generate
    from tunewise.models import load_base
    from tunewise.zoo.corpus import FOODS, RATINGS, arithmetic_fact

    model, tok = load_base("tiny")
    outs = greedy_generate(model, tok, ["Aurora Bistro is a", "Looking for thai food? Golden Garden in the"],
                           max_new_tokens=24, stop=["\n"])
    assert any(f in outs[0] for f in FOODS) and "restaurant" in outs[0]
    assert any(r in outs[1] for r in RATINGS)
    sql = greedy_generate(model, tok, ["Schema: CREATE TABLE people (name TEXT, job TEXT, city TEXT, age INTEGER);\n"
                                       "Question: How many people work as a baker?\nSQL:"], max_new_tokens=24,
                          stop=["\n"])[0]
    assert sql.strip().startswith("SELECT COUNT(*) FROM people WHERE")
    rng = random.Random(12345)
    facts = [arithmetic_fact(rng) for _ in range(60)]
    answers = greedy_generate(model, tok, [q for q, _ in facts], max_new_tokens=4, stop=["\n"])
    correct = sum(a.strip() == ref.strip() for (_, ref), a in zip(facts, answers))
    assert correct >= 6  # measured 11/60 (18%); an untrained model gets 0 -- the weakest of its skills
