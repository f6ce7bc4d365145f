"""Retention API the trainer calls: run_probes and retention_change, and the probe sets."""

from __future__ import annotations

import json
import math

import pytest

from tunewise.errors import TunewiseError
from tunewise.evaluate.base_probes import load_probe
from tunewise.evaluate.loglik import mean_token_loss
from tunewise.evaluate.retention import retention_change, run_probes
from tunewise.tasks.probes import arithmetic_probe, parse_probe_list
from tunewise.zoo.corpus import heldout_documents


def test_retention_change_hand_checked():
    before = {"arithmetic": {"metric": "accuracy", "score": 0.8, "higher_is_better": True},
              "lm": {"metric": "loss", "score": 2.0, "higher_is_better": False},
              "only_before": {"metric": "accuracy", "score": 0.5, "higher_is_better": True}}
    after = {"arithmetic": {"metric": "accuracy", "score": 0.6, "higher_is_better": True},
             "lm": {"metric": "loss", "score": 1.9, "higher_is_better": False}}
    c = retention_change(before, after)
    assert set(c) == {"arithmetic", "lm"}
    a = c["arithmetic"]
    assert (a.before, a.after) == (0.8, 0.6) and a.words() == "25% worse"
    assert a.abs_change == pytest.approx(-0.2) and a.rel_change == pytest.approx(-0.25)
    assert a.worse_by == pytest.approx(0.25) and a.dropped is True
    lm = c["lm"]  # the loss went down: better, not a drop
    assert lm.abs_change == pytest.approx(-0.1) and lm.rel_change == pytest.approx(-0.05)
    assert lm.worse_by == pytest.approx(-0.05) and lm.dropped is False
    assert retention_change(before, after, max_drop=0.3)["arithmetic"].dropped is False
    worse_loss = retention_change(before, {"lm": {"score": 2.2, "higher_is_better": False}})["lm"]
    assert worse_loss.worse_by == pytest.approx(0.1) and worse_loss.dropped is True
    json.dumps({name: x.as_dict() for name, x in c.items()}, allow_nan=False)  # plain JSON for summary.json


def test_retention_change_from_zero_baseline():
    zero = {"p": {"metric": "accuracy", "score": 0.0, "higher_is_better": True}}
    up = retention_change(zero, {"p": {"score": 0.5}})["p"]
    assert up.rel_change is None and up.dropped is False
    same = retention_change(zero, {"p": {"score": 0.0}})["p"]
    assert same.rel_change == 0.0 and same.dropped is False
    loss0 = {"p": {"metric": "loss", "score": 0.0, "higher_is_better": False}}
    assert retention_change(loss0, {"p": {"score": 0.1}})["p"].dropped is True


def test_retention_flags_in_a_summary_cannot_disagree():
    """train decides `dropped` once per probe: summary.json's per-probe flag and its retention_dropped list agree,
    at preserve.max_drop, also for a probe with an absolute tolerance (kl) and one from a zero baseline."""
    from tunewise.config import PreserveConfig
    from tunewise.results import RetentionChange
    from tunewise.train.run import retention_summary

    before = {"arithmetic": {"metric": "accuracy", "score": 0.8, "higher_is_better": True},
              "slight": {"metric": "accuracy", "score": 0.8, "higher_is_better": True},
              "kl": {"metric": "kl", "score": 0.0, "higher_is_better": False, "abs_tolerance": 0.05},
              "zero": {"metric": "accuracy", "score": 0.0, "higher_is_better": True},
              "lm": {"metric": "loss", "score": 2.0, "higher_is_better": False}}
    after = {"arithmetic": {"score": 0.6}, "slight": {"score": 0.78}, "kl": {"score": 0.2}, "zero": {"score": 0.0},
             "lm": {"score": 2.5}}
    for max_drop in (0.0, 0.02, 0.1, 0.3):
        s = retention_summary(before, after, PreserveConfig(probes=list(before), max_drop=max_drop, action="fail"))
        assert s["retention_dropped"] == [name for name, c in s["retention"].items() if c["dropped"]]
        assert s["retention_failed"] is bool(s["retention_dropped"])
    s = retention_summary(before, after, PreserveConfig(probes=list(before), max_drop=0.1))
    assert s["retention_dropped"] == ["arithmetic", "kl", "lm"] and s["retention_failed"] is False
    assert [RetentionChange.from_dict(c) for c in s["retention"].values()] == [
        RetentionChange.measure(before[name], after[name], 0.1) for name in before]  # JSON reads back the same


def test_probe_sets(tmp_path):
    a = arithmetic_probe(20)
    assert a == arithmetic_probe(20) and len(a.prompts) == 20
    assert all(p.endswith("=") and r.startswith(" ") for p, r in zip(a.prompts, a.references, strict=True))
    for p, r in zip(a.prompts, a.references, strict=True):
        x, op, y, _ = p.split()
        assert {"+": int(x) + int(y), "-": int(x) - int(y), "*": int(x) * int(y)}[op] == int(r)
    assert load_probe("lm", 5).texts == heldout_documents(5)
    gen = tmp_path / "capitals.jsonl"
    gen.write_text("\n".join(json.dumps({"prompt": f"Q{i}:", "completion": " yes"}) for i in range(5)))
    p = load_probe(str(gen), 3)
    assert (p.kind, p.metric, p.higher_is_better, len(p.prompts)) == ("generate", "accuracy", True, 3)
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"text": "hello world"}) + "\n")
    assert load_probe(str(text), 10).kind == "loss"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(TunewiseError, match=r"bad.jsonl:2: expected one of .*\(fields found: question\)"):
        load_probe(str(bad), 10)
    half = tmp_path / "half.jsonl"
    half.write_text(json.dumps({"prompt": "no answer"}) + "\n")
    with pytest.raises(TunewiseError, match="half.jsonl:1: a probe record needs"):
        load_probe(str(half), 10)
    with pytest.raises(TunewiseError, match="unknown probe 'trivia'"):
        load_probe("trivia", 10)
    assert parse_probe_list("arithmetic, lm,,arithmetic") == ["arithmetic", "lm"]
    assert parse_probe_list(["lm"]) == ["lm"] and parse_probe_list(None) == []


def test_run_probes_on_a_model(tmp_path, micro_llama_dir):
    from tunewise.models import load_base

    model, tok = load_base(str(micro_llama_dir))
    model.train()
    user = tmp_path / "mine.jsonl"
    user.write_text("\n".join(json.dumps({"prompt": f"{i} + 0 =", "completion": f" {i}"}) for i in range(3)))
    res = run_probes(model, tok, ["arithmetic", "lm", str(user)], limit=4)
    assert model.training  # the trainer's mode is restored
    assert res["arithmetic"]["metric"] == "accuracy" and res["arithmetic"]["higher_is_better"] is True
    assert 0.0 <= res["arithmetic"]["score"] <= 1.0 and res["arithmetic"]["n"] == 4
    assert res["lm"]["metric"] == "loss" and res["lm"]["higher_is_better"] is False
    # an untrained model is close to uniform over the 2048-token vocabulary
    assert res["lm"]["score"] == pytest.approx(mean_token_loss(model, tok, heldout_documents(4)))
    assert abs(res["lm"]["score"] - math.log(len(tok))) < 1.0
    assert res[str(user)]["n"] == 3
    c = retention_change(res, res)
    assert all(v.abs_change == 0 and not v.dropped for v in c.values())


def test_run_probes_refuses_a_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32))
    with pytest.raises(TunewiseError, match="causal language model"):
        run_probes(model, None, ["lm"], limit=2)
    assert run_probes(model, None, [], limit=2) == {}


def test_a_base_score_is_measured_once_per_base_probe_and_limit(tmp_path, micro_llama_dir, monkeypatch):
    import tunewise.evaluate.retention as retention
    from tunewise.models import load_base

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    model, tok = load_base(str(micro_llama_dir))
    first = run_probes(model, tok, ["arithmetic", "lm"], limit=4, base=str(micro_llama_dir), is_base=True)
    assert len(list((tmp_path / "cache" / "retention").glob("*.json"))) == 2

    def must_not_run(*args, **kwargs):
        raise AssertionError("the base's score was measured again")

    monkeypatch.setattr(retention, "run_probe", must_not_run)
    assert run_probes(model, tok, ["arithmetic", "lm"], limit=4, base=str(micro_llama_dir), is_base=True) == first
    with pytest.raises(AssertionError, match="measured again"):  # another limit is another measurement
        run_probes(model, tok, ["lm"], limit=3, base=str(micro_llama_dir), is_base=True)
    with pytest.raises(AssertionError, match="measured again"):  # a tuned model is always measured
        run_probes(model, tok, ["lm"], limit=4, base=str(micro_llama_dir))
