"""`tunewise eval`: test data, scoring of bad records, log-likelihoods, causal and classifier models, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tunewise.errors import TunewiseError
from tunewise.evaluate.loglik import choice_logprobs, mean_token_loss, token_logprobs
from tunewise.evaluate.runner import (
    EvalSpec,
    Item,
    apply_overrides,
    evaluate,
    load_target,
    read_items,
    resolve_data,
    score_items,
)
from tunewise.tasks import make_task
from tunewise.tasks.classify import LABELS

# ------------------------------------------------------------------------------------------------ test data


def test_read_items_keeps_bad_records_as_errors(tmp_path):
    f = tmp_path / "test.jsonl"
    f.write_text("\n".join([
        json.dumps({"prompt": "Q: 1+1\nA:", "completion": " 2"}),
        "{not json",
        json.dumps({"prompt": "no answer"}),
        json.dumps(["a", "list"]),
        json.dumps({"text": "great food", "label": "praise"}),
        json.dumps({"prompt": "x", "completion": "y", "choices": "not a list"}),
        "",
    ]))
    items = read_items(f)
    assert [it.error is None for it in items] == [True, False, False, False, True, False]
    assert "test.jsonl:2: not valid JSON" in items[1].error
    assert "test.jsonl:3: completion: missing" in items[2].error
    assert "expected a JSON object" in items[3].error
    assert (items[4].prompt, items[4].reference) == ("great food", "praise")
    assert "'choices' must be" in items[5].error
    assert len(read_items(f, limit=2)) == 2


def test_read_items_unusable_files(tmp_path):
    with pytest.raises(TunewiseError, match="does not exist"):
        read_items(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(TunewiseError, match=r"no usable record.*bad.jsonl:1: expected one of .*\(fields found: question, answer\)"):
        read_items(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(TunewiseError, match="has no test records"):
        read_items(empty)


def test_score_items_counts_bad_records_and_outputs_as_wrong():
    items = [Item(0, "p", " 4"), Item(1, "", "", error="line 2: not valid JSON"), Item(2, "p", "#### 7"),
             Item(3, "p", " 5")]
    spec = EvalSpec("mem", items, "number")
    scored, metrics, primary = score_items(spec, [" 4", None, "so 7 it is", "banana"])
    assert [s.correct for s in scored] == [True, False, True, False]
    assert scored[1].reason == "line 2: not valid JSON"
    assert scored[3].reason == "no number in the prediction"
    assert primary == "accuracy" and metrics["accuracy"] == 0.5


def test_resolve_data_sources(tmp_path):
    make_task("sql", tmp_path / "sql", {"train": 4, "validation": 2, "test": 5})
    spec = resolve_data(str(tmp_path / "sql"))
    assert (spec.task, spec.scorer_name, len(spec.items)) == ("sql", "sql", 5)
    assert spec.scorer().db == tmp_path / "sql" / "db.sqlite"  # relative to the task directory
    spec = resolve_data(str(tmp_path / "sql" / "validation.jsonl"))  # a split file finds meta.json beside it
    assert spec.scorer_name == "sql" and len(spec.items) == 2
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"prompt": "a", "completion": " b"}) + "\n")
    assert resolve_data(str(plain)).scorer_name == "exact"
    spec = resolve_data(str(plain), task="math")  # user data scored the way a built-in task is
    assert (spec.scorer_name, spec.max_new_tokens) == ("number", 112)
    spec = resolve_data(task="classify", limit=7)
    assert len(spec.items) == 7 and spec.labels == LABELS
    spec = apply_overrides(spec, scorer="normalized", stop=["."], max_new_tokens=3)
    assert (spec.scorer_name, spec.stop, spec.max_new_tokens) == ("normalized", ["."], 3)
    with pytest.raises(TunewiseError, match="nothing to evaluate on"):
        resolve_data()
    with pytest.raises(TunewiseError, match="without meta.json"):
        resolve_data(str(tmp_path))


# ------------------------------------------------------------------------------------------------ log-likelihood


def test_token_logprobs_hand_checked():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = torch.tensor([[2, 1, 0]])
    lp = token_logprobs(logits, ids)
    assert lp.shape == (1, 2)
    assert torch.allclose(lp, torch.log(torch.tensor([[0.25, 0.1]])))


def test_mean_token_loss_matches_the_models_own_loss(micro_llama_dir):
    from tunewise.models import load_base

    model, tok = load_base(str(micro_llama_dir))
    texts = ["Maya has 3 + 4 = 7 apples.", "SELECT name FROM people;"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    with torch.no_grad():
        per = [(float(model(input_ids=torch.tensor([x]), labels=torch.tensor([x])).loss), len(x) - 1) for x in ids]
    pooled = sum(loss * n for loss, n in per) / sum(n for _, n in per)
    assert mean_token_loss(model, tok, texts, batch_size=2) == pytest.approx(pooled, rel=1e-4)


def test_choice_logprobs_sum_the_choice_tokens(micro_llama_dir):
    from tunewise.models import load_base

    model, tok = load_base(str(micro_llama_dir))
    prompt, choices = "Message: table for two\nIntent:", [" booking", " complaint"]
    got = choice_logprobs(model, tok, prompt, choices)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    for choice, value in zip(choices, got, strict=True):
        c = tok(choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0], -1)
        manual = sum(float(logp[len(p) - 1 + j, c[j]]) for j in range(len(c)))
        assert value == pytest.approx(manual, abs=1e-4)


# ------------------------------------------------------------------------------------------------ models


def test_evaluate_causal_generate_and_loglik(micro_llama_dir):
    loaded = load_target(str(micro_llama_dir))
    assert loaded.kind == "causal" and loaded.tuned_kind is None
    spec = resolve_data(task="sql", limit=5)
    res = evaluate(loaded, spec, batch_size=2)
    assert res.n == 5 and len(res.predictions) == 5
    assert set(res.metrics) == {"execution_accuracy", "exec_error_rate", "exact_match"}
    assert all(r["correct"] or r["reason"] for r in res.predictions)  # a reason for every wrong answer
    spec = resolve_data(task="classify", limit=4)
    res = evaluate(loaded, spec, mode="loglik")
    assert all(r["prediction"].strip() in LABELS for r in res.predictions)
    for r in res.predictions:  # the pick is the argmax of the choice log-likelihoods
        lp = choice_logprobs(loaded.model, loaded.tokenizer, r["prompt"], [f" {x}" for x in LABELS])
        assert r["prediction"] == f" {LABELS[max(range(len(lp)), key=lp.__getitem__)]}"


def _micro_bert(tmp_path, labels):
    from transformers import BertConfig, BertForSequenceClassification

    from tunewise.models import load_tokenizer

    tok = load_tokenizer("minilm")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=len(labels),
                     id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
    model = BertForSequenceClassification(cfg)
    out = tmp_path / "bert"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, model, tok


def test_classifier_full_and_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    labels = sorted(LABELS)
    folder, model, tok = _micro_bert(tmp_path, labels)
    loaded = load_target(str(folder))
    assert loaded.kind == "classifier" and loaded.labels == labels
    spec = resolve_data(task="classify", limit=6)
    res = evaluate(loaded, spec)
    assert res.mode == "classifier" and all(r["prediction"] in labels for r in res.predictions)
    # A LoRA adapter (as the trainer saves it: PEFT folder + labels.json) reloads to the same logits.
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS",
                                                  init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    (adapter / "labels.json").write_text(json.dumps(labels))
    tok.save_pretrained(adapter)  # the trainer saves the tokenizer next to the adapter
    reloaded = load_target(str(adapter), base=str(folder))
    assert reloaded.kind == "classifier" and reloaded.tuned_kind == "adapter"
    enc = tok(["Where is Aurora Bistro?"], return_tensors="pt")
    peft_model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded.model(**enc).logits, peft_model(**enc).logits, atol=1e-5)
    with pytest.raises(TunewiseError, match="does not fit"):
        evaluate(reloaded, resolve_data(task="math", limit=2))


# ------------------------------------------------------------------------------------------------ CLI


def _lora_adapter(micro_llama_dir, out):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(micro_llama_dir)
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out)
    return out


def test_cli_eval_task_json_and_files(tmp_path, micro_llama_dir):
    from tunewise.cli import app

    res = CliRunner().invoke(app, ["eval", str(micro_llama_dir), "--task", "classify", "--limit", "4",
                                   "--json", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output[res.output.index("{"):])
    assert payload["n"] == 4 and payload["scorer"] == "classify" and "macro_f1" in payload["metrics"]
    preds = (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 4 and {"prompt", "reference", "prediction", "correct", "reason"} <= set(json.loads(preds[0]))
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["n"] == 4


def test_cli_eval_warns_when_prompts_do_not_fit_the_context(tmp_path, micro_llama_dir):
    from tunewise.cli import app

    test = tmp_path / "test.jsonl"
    rows = [{"prompt": "2 + 2 =", "completion": " 4"}, {"prompt": "word " * 300 + "=", "completion": " 1"}]
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["eval", str(micro_llama_dir), "--data", str(test), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    said = res.output + (res.stderr or "")
    assert "WARNING: 1 of 2 prompts plus --max-new-tokens 4 exceed the model's context of 256 tokens " \
           "(the first is record 2)" in " ".join(said.split())
    res = CliRunner().invoke(app, ["eval", str(micro_llama_dir), "--data", str(test), "--limit", "1"])
    assert "exceed the model's context" not in res.output + (res.stderr or "")


def test_cli_eval_bad_database_is_one_clear_error(tmp_path, micro_llama_dir):
    from tunewise.cli import app

    make_task("sql", tmp_path / "sql", {"train": 1, "validation": 1, "test": 2})
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"x" * 300)
    res = CliRunner().invoke(app, ["eval", str(micro_llama_dir), "--data", str(tmp_path / "sql"),
                                   "--db", str(junk)])
    assert isinstance(res.exception, TunewiseError) and "cannot be read as a SQLite database" in str(res.exception)


def test_cli_eval_run_directory_with_preserve(tmp_path, micro_llama_dir):
    from tunewise.cli import app

    task_dir = tmp_path / "task"
    make_task("math", task_dir, {"train": 2, "validation": 1, "test": 3})
    run = tmp_path / "run"
    _lora_adapter(micro_llama_dir, run / "adapter")
    (run / "config.yaml").write_text(yaml.safe_dump({"base": str(micro_llama_dir), "method": "lora",
                                                     "task_type": "causal-lm",
                                                     "data": {"train": str(task_dir / "train.jsonl")}}))
    res = CliRunner().invoke(app, ["eval", str(run), "--preserve", "arithmetic,lm", "--probe-limit", "4", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output[res.output.index("{"):])
    assert payload["task"] == "math" and payload["n"] == 3  # the run's own task directory, test split
    change = payload["retention"]["change"]
    assert set(change) == {"arithmetic", "lm"}
    assert change["lm"]["higher_is_better"] is False and change["lm"]["abs_change"] != 0  # the adapter moved it
    assert payload["retention"]["base"]["lm"]["score"] == pytest.approx(change["lm"]["before"])
    assert (run / "eval" / "math" / "results.json").is_file() and (run / "eval" / "math" / "retention.json").is_file()
    res = CliRunner().invoke(app, ["eval", str(micro_llama_dir), "--preserve", "lm"])
    assert isinstance(res.exception, TunewiseError) and "base model" in str(res.exception)


def test_cli_eval_warns_when_the_stop_strings_cut_most_answers_to_nothing(tmp_path, micro_llama_dir):
    from tunewise.cli import app

    test = tmp_path / "test.jsonl"
    rows = [{"prompt": f"Invoice {i}: extract the total as JSON.", "completion": ' {"total": 12.5}'} for i in range(4)]
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_target(str(micro_llama_dir))
    free = evaluate(loaded, apply_overrides(resolve_data(str(test)), stop=[], max_new_tokens=6))
    assert free.warnings == []  # no stop string: nothing is cut
    # stop at each answer's first character: every answer is cut to nothing, and the note shows what was cut
    firsts = sorted({p["prediction"][0] for p in free.predictions})
    res = CliRunner().invoke(app, ["eval", str(micro_llama_dir), "--data", str(test), "--max-new-tokens", "6",
                                   *[a for c in firsts for a in ("--stop", c)]], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    said = " ".join((res.output + (res.stderr or "")).split())
    assert "WARNING: 4 of 4 answers are (nearly) empty because generation stops at" in said
    assert "where the model went on" in said
    # a stop string the model never writes cuts nothing and says nothing
    res = CliRunner().invoke(app, ["eval", str(micro_llama_dir), "--data", str(test), "--max-new-tokens", "6",
                                   "--stop", "\u2603never"])
    assert "answers are (nearly) empty" not in res.output + (res.stderr or "")
