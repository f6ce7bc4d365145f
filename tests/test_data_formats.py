"""Issue 17's data part: every format and source reads the same through one reader and one record-shape rule
(train, data check, eval, probes), weighted mixes keep their proportions, and packing trains exactly like
unpacked batches."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunewise.config import validate_config
from tunewise.data.formats import IGNORE, Example, Record, encode_record, load_examples, read_records
from tunewise.data.records import RecordError, normalise
from tunewise.data.schema import check_schema
from tunewise.errors import TunewiseError

# The same three conversations in every format: each normalises to the same messages.
QA = [("Name a colour.", "", "Blue."), ("Add the numbers.", "2 and 3", "5"), ("Say hi.", "", "Hi!")]


def alpaca(i, q, x, a):
    return {"instruction": q, "input": x, "output": a}


def sharegpt(i, q, x, a):
    user = f"{q}\n\n{x}" if x else q
    return {"conversations": [{"from": "human", "value": user}, {"from": "gpt", "value": a}]}


def messages(i, q, x, a):
    user = f"{q}\n\n{x}" if x else q
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": a}]}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tok(tiny_base_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base_dir)


# ------------------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("make", [alpaca, sharegpt, messages])
def test_chat_formats_normalise_to_the_same_messages(make):
    for i, (q, x, a) in enumerate(QA):
        fmt, shape, rec = normalise(make(i, q, x, a))
        assert shape == "chat" and rec == messages(i, q, x, a), fmt


def test_detected_formats_and_system_turns():
    assert normalise({"prompt": "a", "completion": "b"})[:2] == ("prompt_completion", "prompt_completion")
    assert normalise({"text": "t"})[:2] == ("text", "text")
    sys_turn = {"role": "system", "content": "Be brief."}
    assert normalise({"instruction": "q", "output": "a", "system": "Be brief."})[2]["messages"][0] == sys_turn
    sg = {"system": "Be brief.", "conversations": [{"from": "system", "value": "x"}, {"from": "human", "value": "q"},
                                                   {"from": "gpt", "value": "a"}]}
    roles = [m["role"] for m in normalise(sg)[2]["messages"]]
    assert roles == ["system", "system", "user", "assistant"]
    chat = {"messages": [sys_turn, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert normalise(chat) == ("messages", "chat", chat)


def test_an_unmatched_record_names_the_formats_and_its_fields(tok, tmp_path):
    with pytest.raises(RecordError, match=r"expected one of alpaca .*sharegpt .*messages .*prompt, completion.*"
                                          r"text .*\(fields found: question, answer\)"):
        normalise({"question": "q", "answer": "a"})
    f = write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "p", "completion": " c"}, {"question": "q", "answer": "a"}])
    with pytest.raises(TunewiseError, match=r"odd.jsonl:2: expected one of .*\(fields found: question, answer\)"):
        load_examples(f, tok)
    problems = check_schema(f)
    assert [(p.line, p.code) for p in problems] == [(2, "unknown-shape")]
    assert "fields found: question, answer" in problems[0].message


def test_format_override_and_the_old_chat_name(tok, tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", [alpaca(0, *QA[0])])
    assert load_examples(f, tok, fmt="alpaca")[1].used == 1
    with pytest.raises(TunewiseError, match=r"a.jsonl:1: .*data.format is text, but the record has no text field"):
        load_examples(f, tok, fmt="text")
    m = write_jsonl(tmp_path / "m.jsonl", [messages(0, *QA[0])])
    assert load_examples(m, tok, fmt="chat")[0][0].input_ids == load_examples(m, tok, fmt="messages")[0][0].input_ids
    cfg = validate_config({"data": {"train": str(f), "format": "sharegpt"}})
    assert cfg.data.format == "sharegpt"


@pytest.mark.parametrize("make", [alpaca, sharegpt])
def test_chat_formats_train_on_the_same_tokens_as_messages(make, tok, tmp_path):
    """One token rule: an alpaca or sharegpt record is exactly its messages record; loss on the answer only."""
    a, b = write_jsonl(tmp_path / "x.jsonl", [make(i, *t) for i, t in enumerate(QA)]), \
        write_jsonl(tmp_path / "m.jsonl", [messages(i, *t) for i, t in enumerate(QA)])
    got, want = load_examples(a, tok)[0], load_examples(b, tok)[0]
    assert [(e.input_ids, e.labels) for e in got] == [(e.input_ids, e.labels) for e in want]
    answer = tok(QA[0][2] + tok.eos_token, add_special_tokens=False)["input_ids"]
    assert [t for t in got[0].labels if t != IGNORE] == answer


def test_chat_formats_render_through_a_chat_template(tok, tmp_path):
    templated = tok.__class__.from_pretrained(tok.name_or_path)
    templated.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    rec = Record(normalise(sharegpt(0, *QA[1]))[2], 1)
    ids, labels = encode_record(rec, "chat", templated, Path("x"))
    text = templated.decode(ids)
    assert text.startswith("<user>Add the numbers.\n\n2 and 3</s><assistant>5")
    assert templated.decode([t for t in labels if t != IGNORE]) == "5</s>"


def test_schema_problems_name_the_fields_of_the_records_own_format(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [
        {"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}]},
        {"instruction": "q", "output": 3},
        {"instruction": "q", "input": "", "output": ""},
        alpaca(0, *QA[0]),
    ])
    got = {(p.line, p.field, p.code) for p in check_schema(f)}
    assert got == {(1, "conversations[1].from", "unknown-role"), (2, "conversations[1].value", "empty-target"),
                   (3, "output", "wrong-type"), (4, "output", "empty-target")}


# ------------------------------------------------------------------------------------------------ sources


def _rows():
    return [alpaca(i, *t) for i, t in enumerate(QA)]


def _save_all_kinds(tmp_path: Path) -> dict[str, str]:
    """The same records as JSONL, JSON, CSV, Parquet and a save_to_disk folder (a DatasetDict with splits)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows()
    out = {"jsonl": str(write_jsonl(tmp_path / "d.jsonl", rows))}
    (tmp_path / "d.json").write_text(json.dumps(rows))
    out["json"] = str(tmp_path / "d.json")
    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
        w.writeheader()
        w.writerows(rows)
    out["csv"] = str(tmp_path / "d.csv")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    out["parquet"] = str(tmp_path / "d.parquet")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                               "test": datasets.Dataset.from_list(rows[:1])})
    dd.save_to_disk(str(tmp_path / "saved"))
    out["save_to_disk"] = str(tmp_path / "saved")
    return out


def test_every_source_kind_gives_the_same_examples(tok, tmp_path):
    sources = _save_all_kinds(tmp_path)
    want = [(e.input_ids, e.labels) for e in load_examples(sources["jsonl"], tok)[0]]
    for kind, path in sources.items():
        got = load_examples(path, tok)[0]
        assert [(e.input_ids, e.labels) for e in got] == want, kind
        assert [e.line for e in got] == ([2, 3, 4] if kind == "csv" else [1, 2, 3]), kind  # CSV: header is line 1
        assert not check_schema(path), kind
    assert len(list(read_records(sources["save_to_disk"], split="test"))) == 1
    with pytest.raises(TunewiseError, match=r"has no split 'dev' \(it has train, test\)"):
        list(read_records(sources["save_to_disk"], split="dev"))


def test_sharegpt_in_csv_and_a_column_mapping(tok, tmp_path):
    path = tmp_path / "chat.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dialog"])
        w.writerow([json.dumps(sharegpt(0, *QA[0])["conversations"])])
    got = load_examples(path, tok, columns={"conversations": "dialog"})[0]
    want = load_examples(write_jsonl(tmp_path / "m.jsonl", [messages(0, *QA[0])]), tok)[0]
    assert got[0].input_ids == want[0].input_ids
    q = write_jsonl(tmp_path / "q.jsonl", [{"question": "Say hi.", "answer": "Hi!"}])
    mapped = load_examples(q, tok, columns={"instruction": "question", "output": "answer"})[0]
    assert mapped[0].input_ids == load_examples(write_jsonl(tmp_path / "h.jsonl", [alpaca(0, *QA[2])]), tok)[0][0].input_ids


def _cache_as_hub_dataset(tmp_path: Path, name: str, rows: list[dict]) -> Path:
    """A datasets cache holding `name` as if load_dataset had downloaded it once (no network involved)."""
    import datasets

    data = write_jsonl(tmp_path / "hub-src.jsonl", rows)
    build = tmp_path / "build"
    datasets.load_dataset("json", data_files={"train": str(data)}, cache_dir=str(build))
    built = next(p.parent for p in build.rglob("dataset_info.json"))
    cache = tmp_path / "hf-datasets"
    owner, repo = name.split("/")
    target = cache / f"{owner}___{repo}" / "default" / "0.0.0" / "0123abcd"
    target.mkdir(parents=True)
    shutil.copy(built / "dataset_info.json", target)
    shutil.copy(next(built.glob("*-train.arrow")), target / f"{repo}-train.arrow")
    return cache


def test_a_dataset_id_reads_from_the_local_cache_offline(tok, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = _cache_as_hub_dataset(tmp_path, "tuner/mini-alpaca", _rows())
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    got = load_examples("tuner/mini-alpaca", tok)[0]
    assert [e.input_ids for e in got] == [e.input_ids for e in load_examples(write_jsonl(
        tmp_path / "same.jsonl", _rows()), tok)[0]]
    assert not check_schema("tuner/mini-alpaca")
    from tunewise.evaluate.runner import read_items

    assert [it.reference for it in read_items(Path("tuner/mini-alpaca"), split="train")] == ["Blue.", "5", "Hi!"]


def test_an_unreachable_dataset_id_is_one_clear_line(tok, monkeypatch, tmp_path):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty-cache")
    with pytest.raises(TunewiseError) as e:
        load_examples("nobody/no-such-dataset", tok)
    msg = str(e.value)
    assert "'nobody/no-such-dataset' is not a local file or folder and is not in the local Hugging Face datasets " \
           "cache (HF_HUB_OFFLINE is set)" in msg and "\n" not in msg
    with pytest.raises(TunewiseError, match="data file '.*missing.jsonl' does not exist"):
        load_examples(tmp_path / "missing.jsonl", tok)
    (tmp_path / "plain").mkdir()
    with pytest.raises(TunewiseError, match="not one written by datasets' save_to_disk"):
        load_examples(tmp_path / "plain", tok)


# ------------------------------------------------------------------------------------------------ readers


def test_eval_scores_chat_format_test_sets(tmp_path):
    from tunewise.evaluate.runner import read_items, resolve_data

    sources = _save_all_kinds(tmp_path)
    items = read_items(Path(sources["jsonl"]))
    assert items[1].prompt == [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}]
    assert items[1].reference == "5"
    sg = write_jsonl(tmp_path / "sg.jsonl", [sharegpt(i, *t) for i, t in enumerate(QA)])
    assert [(it.prompt, it.reference) for it in read_items(sg)] == [(it.prompt, it.reference) for it in items]
    spec = resolve_data(sources["save_to_disk"])  # split 'test' of the DatasetDict
    assert len(spec.items) == 1 and spec.items[0].reference == "Blue."


def test_probe_sets_read_every_format(tmp_path):
    from tunewise.tasks.probes import user_probe

    probe = user_probe(write_jsonl(tmp_path / "p.jsonl", [sharegpt(i, *t) for i, t in enumerate(QA)]), 10)
    assert probe.kind == "generate" and probe.references == ["Blue.", "5", "Hi!"]
    assert probe.prompts[0] == [{"role": "user", "content": "Name a colour."}]


# ------------------------------------------------------------------------------------------------ mixing


def test_mixed_sources_follow_their_weights(tok, tmp_path):
    from tunewise.data.loading import load_train

    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"A{i} =", "completion": f" {i}"} for i in range(60)])
    b = write_jsonl(tmp_path / "b.jsonl", [messages(i, f"B{i}?", "", "ok") for i in range(7)])
    weights = {str(a): 0.6, str(b): 0.3, "probe:arithmetic": 0.1}
    cfg = validate_config({"data": {"max_seq_len": 64, "train": [
        {"path": str(a), "weight": 6}, {"path": str(b), "weight": 3}, {"probe": "arithmetic", "weight": 1}]}})
    examples, stats = load_train(cfg.data, tok, seed=0)
    counts = Counter(e.source for e in examples)
    assert set(counts) == set(weights)
    for name, w in weights.items():
        assert abs(counts[name] / len(examples) - w) < 0.01, (name, counts)
    assert stats.sources == dict(counts)
    lines_a = {e.line for e in examples if e.source == str(a)}
    assert lines_a == set(range(1, 61))  # the largest share's file is used whole, each record once
    assert Counter(e.line for e in examples if e.source == str(b)).most_common(1)[0][1] >= 3  # b repeats
    again, _ = load_train(cfg.data, tok, seed=0)
    assert [e.input_ids for e in again] == [e.input_ids for e in examples]  # a pure function of the seed


def test_mix_rules_and_probe_sources(tok):
    from tunewise.data.mix import Part, mix_sizes, probe_records

    assert mix_sizes([Part("a", 0.5, [Record({}, 1)] * 10), Part("b", 0.5, [Record({}, 1)] * 100)]) == [100, 100]
    with pytest.raises(TunewiseError, match="only probe sources"):
        mix_sizes([Part("p", 1.0, [], "knowledge")])
    for name, shape in (("arithmetic", "prompt_completion"), ("lm", "text"), ("knowledge", "chat")):
        recs = probe_records(name, 5)
        assert len(recs) == 5 and {normalise(r.data)[1] for r in recs} == {shape}
    with pytest.raises(TunewiseError, match="kl probe measures drift"):
        probe_records("kl", 3)
    with pytest.raises(Exception, match="exactly one of path or probe"):
        validate_config({"data": {"train": [{"path": "x.jsonl", "probe": "lm"}]}})


def test_a_run_trains_on_a_mix_and_reports_its_sources(micro_llama_dir, tmp_path):
    from tunewise.train import train

    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"Q{i} =", "completion": f" {i}"} for i in range(20)])
    cfg = validate_config({"base": str(micro_llama_dir), "data": {"max_seq_len": 32, "train": [
        {"path": "a.jsonl", "weight": 0.8}, {"probe": "arithmetic", "weight": 0.2}]},
        "lora": {"r": 4}, "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-3}})
    cfg.data.train[0].path = str(a)
    summary = train(cfg, tmp_path / "run", quiet=True).summary.as_dict()
    assert summary["status"] == "completed" and summary["examples"]["sources"] == {str(a): 20, "probe:arithmetic": 5}


def test_a_mix_in_a_config_file_resolves_paths_next_to_it(tmp_path):
    from tunewise.config import load_run_config

    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    (tmp_path / "c.yaml").write_text("data:\n  train:\n    - {path: a.jsonl, weight: 0.9}\n"
                                     "    - {probe: knowledge, weight: 0.1}\n  eval: {path: a.jsonl}\n")
    cfg = load_run_config(tmp_path / "c.yaml")
    assert cfg.data.train[0].path == str(tmp_path / "a.jsonl") and cfg.data.eval.path == str(tmp_path / "a.jsonl")


# ------------------------------------------------------------------------------------------------ packing


def _examples(tok, n=14):
    import random

    rng = random.Random(3)
    out = []
    for i in range(n):
        prompt = "Q: " + " ".join(str(rng.randrange(100)) for _ in range(rng.randrange(1, 14))) + " ="
        rec = Record({"prompt": prompt, "completion": " " + "x" * rng.randrange(1, 6)}, i + 1)
        ids, labels = encode_record(rec, "prompt_completion", tok, Path("mem"))
        out.append(Example(ids, labels, i + 1))
    return out


def test_pack_fills_rows_and_keeps_every_example(tok):
    from tunewise.train.batches import target_count
    from tunewise.train.packing import pack, packed_collate

    exs = _examples(tok)
    rows = pack(exs, 64)
    assert len(rows) < len(exs) and all(len(r.input_ids) <= 64 for r in rows)
    assert sorted(n for r in rows for n in r.segments) == sorted(len(e.input_ids) for e in exs)
    assert target_count(rows) == target_count(exs)
    b = packed_collate(rows[:2], tok.pad_token_id)
    first = rows[0].segments
    assert b["position_ids"][0, first[0]] == 0 and b["position_ids"][0, first[0] - 1] == first[0] - 1
    mask = b["attention_mask"][0, 0]
    assert not mask[first[0], first[0] - 1] and mask[first[0] + 1, first[0]]  # no look across the boundary


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_and_gradients_equal_unpacked(attn, tok, tiny_base_dir):
    from transformers import AutoModelForCausalLM

    from tunewise.train.batches import collate, target_count
    from tunewise.train.loop import summed_loss
    from tunewise.train.packing import pack

    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32, attn_implementation=attn)
    exs = _examples(tok)
    n = target_count(exs)

    def loss_and_grad(batches):
        model.zero_grad()
        total = sum(summed_loss(model, collate(b, tok.pad_token_id), False) for b in batches) / n
        total.backward()
        return float(total.detach()), torch.cat([p.grad.flatten() for p in model.parameters()])

    unpacked, g_un = loss_and_grad([exs[i:i + 4] for i in range(0, len(exs), 4)])  # padded batches
    rows = pack(exs, 96)
    packed, g_pk = loss_and_grad([rows])
    assert abs(packed - unpacked) < 1e-5
    assert torch.allclose(g_pk, g_un, atol=1e-5, rtol=1e-4)


def test_a_packed_run_trains(micro_llama_dir, tmp_path):
    from tunewise.train import train

    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"Q{i} =", "completion": f" {i}"} for i in range(24)])
    cfg = validate_config({"base": str(micro_llama_dir), "data": {"train": str(a), "max_seq_len": 48,
                                                                  "packing": True},
                           "lora": {"r": 4}, "train": {"max_steps": 2, "batch_size": 2, "lr": 1e-3}})
    summary = train(cfg, tmp_path / "run", quiet=True).summary.as_dict()
    assert summary["status"] == "completed" and summary["examples"]["used"] == 24
    # 2 steps x 2 rows of up to 48 tokens: packed rows are mostly full, where 4 unpacked records are ~8 tokens each
    assert 2 * 2 * 48 // 2 < summary["tokens"] <= 2 * 2 * 48, summary["tokens"]
    adapter = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    assert any(t.abs().max() > 0 for k, t in adapter.items() if "lora_B" in k)  # the steps moved B off its zeros


def test_data_check_reads_every_format_and_source(tmp_path, tiny_base_dir):
    from typer.testing import CliRunner

    from tunewise.cli import app

    sources = _save_all_kinds(tmp_path)
    for kind in ("jsonl", "parquet", "save_to_disk"):
        res = CliRunner().invoke(app, ["data", "check", sources[kind], "--model", str(tiny_base_dir), "--json"])
        report = json.loads(res.output)
        assert report["records"]["valid"] == 3 and report["records"]["shapes"] == {"chat": 3}, kind
    bad = write_jsonl(tmp_path / "bad.jsonl", [sharegpt(0, *QA[0]), {"conversations": [{"from": "bot", "value": "x"}]}])
    res = CliRunner().invoke(app, ["data", "check", str(bad), "--model", "none"])
    assert res.exit_code == 2 and "bad.jsonl:2: conversations[0].from: unknown speaker 'bot'" in res.output
    res = CliRunner().invoke(app, ["data", "check", sources["save_to_disk"], "--split", "test", "--format",
                                   "alpaca", "--model", "none", "--json"])
    assert json.loads(res.output)["records"]["valid"] == 1
    res = CliRunner().invoke(app, ["data", "check", str(bad), "--format", "orca"])
    assert isinstance(res.exception, TunewiseError) and "unknown data format 'orca'" in str(res.exception)


def test_a_misspelt_key_in_a_source_is_named():
    from tunewise.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.train\[1\].wieght: unknown key; did you mean 'data.train\[1\].weight'"):
        validate_config({"data": {"train": [{"path": "a.jsonl"}, {"probe": "lm", "wieght": 0.1}]}})
    with pytest.raises(ConfigError, match=r"data.eval.paht: unknown key"):
        validate_config({"data": {"train": "a.jsonl", "eval": {"paht": "b.jsonl"}}})


def test_classification_reads_the_same_formats(tok, tmp_path):
    from tunewise.data.formats import load_classification

    rows = [("great food", "praise"), ("too slow", "complaint"), ("lovely staff", "praise")]
    plain = write_jsonl(tmp_path / "p.jsonl", [{"prompt": t, "completion": f" {y}"} for t, y in rows])
    chat = write_jsonl(tmp_path / "a.jsonl", [{"instruction": t, "output": y} for t, y in rows])
    texts = write_jsonl(tmp_path / "t.jsonl", [{"text": t, "label": y} for t, y in rows])
    want = load_classification(plain, tok, 32)
    for f in (chat, texts):
        got = load_classification(f, tok, 32)
        assert got[2] == want[2] == ["complaint", "praise"]
        assert [(e.input_ids, e.labels) for e in got[0]] == [(e.input_ids, e.labels) for e in want[0]]


def test_a_classifier_trains_on_an_alpaca_file_with_a_validation_split(tmp_path):
    import datasets

    from tunewise.train import train

    rows = [{"instruction": t, "output": y} for t, y in
            [("great food", "praise"), ("too slow", "complaint"), ("lovely staff", "praise"), ("cold soup", "complaint")]]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows * 2),
                          "validation": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    cfg = validate_config({"base": "minilm", "task_type": "sequence-classification", "num_labels": 2,
                           "data": {"train": str(tmp_path / "saved"), "eval": str(tmp_path / "saved"),
                                    "max_seq_len": 16},
                           "lora": {"r": 4}, "train": {"max_steps": 1, "batch_size": 4, "lr": 1e-3}})
    summary = train(cfg, tmp_path / "run", quiet=True).summary.as_dict()
    assert summary["status"] == "completed" and summary["examples"]["used"] == 8
    assert summary["final_eval_loss"] is not None  # read from the folder's validation split
    assert json.loads((tmp_path / "run" / "adapter" / "labels.json").read_text()) == ["complaint", "praise"]
