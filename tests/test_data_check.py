"""`tunewise data check` on hand-made files: schema, duplicates, conflicts, lengths, labels, targets, leakage."""

from __future__ import annotations

import json
import random
import string

import numpy as np
import pytest
from typer.testing import CliRunner

from tunewise.data import dedup
from tunewise.data.audit import AuditOptions, audit, write_fixed
from tunewise.data.schema import Problem, check_schema
from tunewise.errors import TunewiseError

NO_TOK = dict(model=None)


def write_jsonl(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return str(path)


def words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randrange(3, 9))) for _ in range(n))


def unique_records(n: int, seed: int = 0) -> list[dict]:
    """n prompt/completion pairs of random words: no duplicates, near duplicates or conflicts."""
    rng = random.Random(seed)
    return [{"prompt": f"{words(rng, 12)}\nAnswer:", "completion": " " + words(rng, 6)} for _ in range(n)]


def keyed(problems: list[Problem]) -> set[tuple[int, str, str]]:
    return {(p.line, p.field, p.code) for p in problems}


# --- schema ----------------------------------------------------------------------------------------------


def test_schema_reports_every_problem_with_line_and_field(tmp_path):
    lines = [
        {"prompt": "Q: 2 + 3?\nA:", "completion": " 5"},  # 1 fine
        '{"prompt": "x", ',  # 2 broken JSON
        {"prompt": 7, "completion": " a"},  # 3 wrong type
        {"prompt": "p\nA:"},  # 4 missing completion
        {"prompt": "p\nA:", "completion": "   "},  # 5 empty target
        {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]},  # 6 unknown role
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                      {"role": "assistant", "content": "c"}]},  # 7 same role twice (warning)
        {"messages": [{"role": "user", "content": "only a question"}]},  # 8 nothing to learn
        {"text": ""},  # 9 empty text
        [1, 2],  # 10 not an object
        {"input": "x", "output": "y"},  # 11 unknown shape
        {"prompt": "The answer is", "completion": "yes"},  # 12 joined text (warning)
        {"prompt": "a\u0000b\nA:", "completion": " x"},  # 13 escaped NUL inside a string
        {"messages": "hello"},  # 14 messages of the wrong type
        "",  # 15 blank line: skipped, as the trainer does
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]},  # 16 empty answer
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    problems = check_schema(path)
    got = keyed(problems)
    expected_errors = {
        (2, "(line)", "invalid-json"), (3, "prompt", "wrong-type"), (4, "completion", "missing-field"),
        (5, "completion", "empty-target"), (6, "messages[1].role", "unknown-role"), (8, "messages", "no-assistant"),
        (9, "text", "empty-target"), (10, "(record)", "not-an-object"), (11, "(record)", "unknown-shape"),
        (13, "prompt", "bad-text"), (14, "messages", "wrong-type"), (16, "messages[1].content", "empty-target"),
    }
    assert expected_errors <= got
    assert (7, "messages[1].role", "same-role") in got
    assert (12, "completion", "joined-text") in got
    errors = {p.line for p in problems if p.severity == "error"}
    assert errors == {line for line, _, _ in expected_errors}  # lines 1, 7, 12, 15 are not errors
    assert {p.severity for p in problems if p.line in (7, 12)} == {"warning"}
    first = next(p for p in problems if p.line == 3)
    assert str(first).startswith(f"{path}:3: prompt: expected a string, got int")
    broken = next(p for p in problems if p.line == 2)
    assert "at column 17" in broken.message  # '{"prompt": "x", ' ends at column 16


def test_clean_file_has_no_problems(tmp_path):
    assert check_schema(write_jsonl(tmp_path / "ok.jsonl", unique_records(20))) == []


def test_problem_cap_counts_the_rest(tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", ["not json"] * 3000)
    problems = check_schema(path, max_problems=100)
    assert len(problems) == 101
    assert problems[-1].code == "more" and "2900 more" in problems[-1].message
    assert problems[-1].severity == "error"
    assert [p.line for p in problems[:100]] == list(range(1, 101))


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    (p,) = check_schema(empty)
    assert p.code == "empty-file" and p.severity == "error" and p.line == 0
    with pytest.raises(TunewiseError, match="does not exist"):
        check_schema(tmp_path / "nope.jsonl")


def test_binary_problems_have_line_numbers(tmp_path):
    path = tmp_path / "bin.jsonl"
    good = json.dumps({"text": "fine text"}).encode()
    path.write_bytes(b"\n".join([good, b'{"text": "\xff\xfe"}', b'{"text": "a\x00b"}', b"[" * 5000, good]))
    got = keyed(check_schema(path))  # no trailing newline on the last line
    assert got == {(2, "(line)", "invalid-utf8"), (3, "(line)", "nul-byte"), (4, "(line)", "too-deep")}


def test_overlong_line_is_reported_not_loaded(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_bytes(json.dumps({"text": "x" * 5000}).encode() + b"\n" + json.dumps({"text": "ok"}).encode() + b"\n")
    (p,) = check_schema(path, max_line_bytes=1000)
    assert (p.line, p.code) == (1, "line-too-long")


def test_json_csv_parquet(tmp_path):
    recs = [{"prompt": "a\nA:", "completion": " b"}, {"prompt": 3, "completion": " c"}, {"prompt": "d\nA:"}]
    (tmp_path / "d.json").write_text(json.dumps(recs))
    assert keyed(check_schema(tmp_path / "d.json")) == {(2, "prompt", "wrong-type"), (3, "completion",
                                                                                       "missing-field")}
    (tmp_path / "notlist.json").write_text(json.dumps({"prompt": "x"}))
    assert [p.code for p in check_schema(tmp_path / "notlist.json")] == ["not-a-list"]
    csv_text = ('prompt,completion\n"q1\nA:", yes\nq2\nq3:, no\n,\n'
                'q5:,\n')
    (tmp_path / "d.csv").write_text(csv_text)
    got = keyed(check_schema(tmp_path / "d.csv"))
    # rows count from 2 (the header is line 1): "q2" has one column, the empty row has an empty completion
    assert (3, "(line)", "invalid-csv") in got and (6, "completion", "empty-target") in got
    (tmp_path / "chat.csv").write_text('messages\n"[{""role"": ""user"", ""content"": ""hi""}]"\n')
    assert keyed(check_schema(tmp_path / "chat.csv")) == {(2, "messages", "no-assistant")}
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["a\nA:", "b\nA:"], "completion": [" x", " "]}), tmp_path / "d.parquet")
    assert keyed(check_schema(tmp_path / "d.parquet")) == {(2, "completion", "empty-target")}


# --- duplicates, conflicts, near duplicates --------------------------------------------------------------


def test_exact_duplicates_conflicts_and_near_duplicates(tmp_path):
    base = unique_records(40)
    near = {"prompt": "well " + base[5]["prompt"], "completion": base[5]["completion"]}  # Jaccard ~0.9
    conflict = {"prompt": base[7]["prompt"], "completion": " something else entirely"}
    path = write_jsonl(tmp_path / "d.jsonl", [*base, base[3], base[3], near, conflict])
    r = audit(path, AuditOptions(**NO_TOK))
    d = r["duplicates"]
    assert d["exact"] == 2 and d["exact_examples"] == [[41, 4], [42, 4]]
    assert d["conflicts"]["prompts"] == 1 and d["conflicts"]["records"] == 2
    assert d["conflicts"]["examples"] == [[44, 8]]
    assert d["near"]["near_duplicates"] == 1 and d["near"]["examples"][0][:2] == [43, 6]
    assert r["exit_code"] == 1 and not r["schema"]["errors"]
    assert {f["check"] for f in r["findings"]} >= {"duplicates", "conflicts", "size"}


def test_minhash_estimates_jaccard():
    rng = random.Random(1)
    base = words(rng, 200).split()
    texts, truth = [], []
    for keep in (200, 180, 150, 100, 40):
        other = base[:keep] + words(rng, 200 - keep).split()
        texts.append(" ".join(other))
    sets = dedup.shingle_sets([" ".join(base), *texts])
    truth = [dedup.jaccard(sets[0], s) for s in sets[1:]]
    sig = dedup.signatures([" ".join(base), *texts], num_perm=256)
    est = dedup.estimate_jaccard(sig, np.zeros(5, np.int64), np.arange(1, 6))
    assert truth[0] == 1.0 and est[0] == 1.0
    assert np.all(np.abs(est - np.array(truth)) < 0.1), (est, truth)


def test_lsh_finds_planted_pairs_and_cross_matches():
    rng = random.Random(2)
    texts = [words(rng, 30) for _ in range(500)]
    texts[300] = texts[10] + " tail"
    texts[450] = texts[20].upper()  # case differences are normalised away
    sig = dedup.signatures(texts)
    a, b, est = dedup.near_duplicates(sig, 0.8)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == {(10, 300), (20, 450)}
    ev = dedup.signatures([texts[10] + " other", words(rng, 30)])
    e, t, _ = dedup.cross_matches(sig, ev, 0.8)
    assert e.tolist() == [0] and t.tolist() in ([10], [300])


# --- lengths ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def word_tokenizer():
    """A whitespace word-level tokenizer: every word is one token, so lengths are exact by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<unk>": 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")


def test_length_truncation_and_dropped(tmp_path, word_tokenizer):
    from tunewise.data.audit_length import LengthStats
    from tunewise.data.schema import ProblemLog, iter_checked

    recs = [{"prompt": "a b c", "completion": " d e"},  # 3 + 2 + eos = 6
            {"prompt": "a b c d e f g h", "completion": " x"},  # 8 + 1 + 1 = 10: prompt fills max_seq_len 8
            {"text": "w " * 11},  # 11 + 1 = 12: truncated, still trains
            {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "v"}]}]
    path = tmp_path / "len.jsonl"
    write_jsonl(path, recs)
    stats = LengthStats(word_tokenizer, 8, path)
    for rec in iter_checked(path, ProblemLog()):
        stats.add(rec)
    r = stats.result()
    # chat without a template: "<|user|>\nu\n" "<|assistant|>\n" "v<eos>" "\n" -> 2 + 1 + 2 = 5 word tokens
    assert r["examples"] == 4 and r["max"] == 12 and r["min"] == 5
    assert r["truncated"] == 2 and r["truncated_lines"] == [2, 3]
    assert r["no_labels_left"] == 1 and r["no_labels_lines"] == [2]


def test_sampled_lengths_keep_exact_truncation_counts(tmp_path, word_tokenizer):
    from tunewise.data.audit_length import LengthStats
    from tunewise.data.schema import ProblemLog, iter_checked

    rng = random.Random(3)
    recs = [{"text": " ".join(["w"] * rng.randrange(1, 20))} for _ in range(3000)]
    path = tmp_path / "many.jsonl"
    write_jsonl(path, recs)
    truth = sum(len(r["text"].split()) + 1 > 12 for r in recs)
    full, sampled = LengthStats(word_tokenizer, 12, path), LengthStats(word_tokenizer, 12, path, rate=0.1)
    for rec in iter_checked(path, ProblemLog()):
        full.add(rec)
        sampled.add(rec)
    a, b = full.result(), sampled.result()
    assert a["truncated"] == b["truncated"] == truth and a["max"] == b["max"] == 20
    assert a["sampled"] == 3000 and 200 < b["sampled"] < 400 and b["examples"] == 3000
    assert abs(a["p50"] - b["p50"]) <= 2


def test_fast_tokenizer_matches_transformers(tmp_path, word_tokenizer):
    from tunewise.data.audit_length import FastTokenizer, load_length_tokenizer, token_lengths

    word_tokenizer.save_pretrained(tmp_path / "tok")
    fast = load_length_tokenizer(str(tmp_path / "tok"))
    assert isinstance(fast, FastTokenizer) and fast.eos_token == "<eos>"
    texts = ["a b c", "one<eos>", "", "x  y\nz <eos>"]
    assert token_lengths(fast, texts) == token_lengths(word_tokenizer, texts)


@pytest.mark.integration
def test_cli_lengths_with_tiny_tokenizer(tmp_path, tiny_base_dir):
    path = write_jsonl(tmp_path / "d.jsonl", unique_records(30))
    res = CliRunner().invoke(_app(), ["data", "check", path, "--model", str(tiny_base_dir), "--max-seq-len", "16",
                                      "--json"])
    r = json.loads(res.stdout)
    assert r["length"]["examples"] == 30 and r["length"]["truncated"] == 30
    assert any(f["check"] == "length" for f in r["findings"])
    # the torch-free fast path counts exactly what the trainer's transformers tokenizer produces
    from tunewise.data.audit_length import FastTokenizer, load_length_tokenizer, token_lengths
    from tunewise.models import load_tokenizer

    fast, slow = load_length_tokenizer("tiny"), load_tokenizer("tiny")
    assert isinstance(fast, FastTokenizer) and fast.eos_token == slow.eos_token
    texts = [r["prompt"] for r in unique_records(20)] + ["12 + 30 = 42<|endoftext|>", " SELECT x FROM t;", "é中😀"]
    assert token_lengths(fast, texts) == token_lengths(slow, texts)


# --- labels, structured targets, skills, leakage ---------------------------------------------------------


def test_class_balance(tmp_path):
    recs = [{"prompt": f"{t}\nSentiment:", "completion": " positive"} for t in unique_words(60, 3)]
    recs += [{"prompt": f"{t}\nSentiment:", "completion": " negative"} for t in unique_words(3, 4)]
    r = audit(write_jsonl(tmp_path / "c.jsonl", recs), AuditOptions(**NO_TOK))
    assert r["labels"]["classes"] == 2 and r["labels"]["counts"] == {"positive": 60, "negative": 3}
    assert r["labels"]["imbalance_ratio"] == 20.0
    msgs = [f["message"] for f in r["findings"] if f["check"] == "labels"]
    assert any("imbalance 20.0:1" in m for m in msgs) and any("fewer than 5" in m for m in msgs)
    free = audit(write_jsonl(tmp_path / "f.jsonl", unique_records(60)), AuditOptions(**NO_TOK))
    assert free["labels"] is None


def unique_words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [words(rng, 10) for _ in range(n)]


def test_structured_targets_auto_and_declared(tmp_path):
    good = [{"prompt": f"{t}\nJSON:", "completion": json.dumps({"name": t[:5]})} for t in unique_words(18, 5)]
    bad = [{"prompt": "x\nJSON:", "completion": '{"name": "unclosed'}, {"prompt": "y\nJSON:", "completion": "{'a': 1}"}]
    r = audit(write_jsonl(tmp_path / "j.jsonl", good + bad), AuditOptions(**NO_TOK))
    s = r["structured"]
    assert (s["format"], s["valid"], s["targets"], s["declared"]) == ("json", 18, 20, False)
    assert [line for line, _ in s["invalid_examples"]] == [19, 20]
    mr = [{"prompt": "Describe:\n", "completion": "inform(name[Blue Spoon], food[thai])"},
          {"prompt": "Describe 2:\n", "completion": "inform(name[Red Oven], food[greek]"},
          {"prompt": "Describe 3:\n", "completion": "the Red Oven is nice"}]
    r = audit(write_jsonl(tmp_path / "mr.jsonl", mr), AuditOptions(output_format="mr", **NO_TOK))
    assert (r["structured"]["format"], r["structured"]["valid"]) == ("mr", 1)
    sql = [{"prompt": "Q1\nSQL:", "completion": " SELECT name FROM restaurants WHERE food = 'thai';"},
           {"prompt": "Q2\nSQL:", "completion": " SELECT name FROM WHERE;"}]
    r = audit(write_jsonl(tmp_path / "sql.jsonl", sql), AuditOptions(**NO_TOK))
    assert (r["structured"]["format"], r["structured"]["valid"]) == ("sql", 1)
    assert audit(write_jsonl(tmp_path / "u.jsonl", unique_records(5)), AuditOptions(**NO_TOK))["structured"] is None


def test_skill_coverage(tmp_path):
    recs = unique_records(30) + [{"prompt": "12 + 30 =", "completion": " 42"}]
    r = audit(write_jsonl(tmp_path / "s.jsonl", recs), AuditOptions(preserve=["arithmetic", "sql", "x=zebra"],
                                                                     **NO_TOK))
    sk = r["skills"]["skills"]
    assert sk["arithmetic"]["examples"] == 1 and sk["arithmetic"]["first_line"] == 31
    assert sk["sql"]["examples"] == 0 and sk["x"]["examples"] == 0
    msgs = " | ".join(f["message"] for f in r["findings"] if f["check"] == "skills")
    assert "no sql examples" in msgs and "unlearn" in msgs and "no x examples" in msgs
    assert "mix in the missing skills" in r["verdict"]["message"]
    none = audit(write_jsonl(tmp_path / "n.jsonl", unique_records(5)), AuditOptions(preserve=["arithmetic"], **NO_TOK))
    line = f"data.train: [{{path: {tmp_path / 'n.jsonl'}, weight: 0.9}}, {{probe: arithmetic, weight: 0.1}}]"
    assert any(line in f["message"] for f in none["findings"])  # the advice as the config line that does it


def test_leakage_exact_and_near(tmp_path):
    train = unique_records(50)
    near = {"prompt": train[9]["prompt"], "completion": train[9]["completion"] + " more"}
    ev = [train[4], near, *unique_records(5, seed=9)]
    r = audit(write_jsonl(tmp_path / "t.jsonl", train),
              AuditOptions(eval_path=write_jsonl(tmp_path / "e.jsonl", ev), **NO_TOK))
    lk = r["leakage"]
    assert (lk["exact"], lk["exact_lines"], lk["same_prompt"]) == (1, [1], 2)
    assert lk["near"] == 2 and sorted(e[:2] for e in lk["near_examples"]) == [[1, 5], [2, 10]]
    assert r["exit_code"] == 2 and any(f["check"] == "leakage" and f["severity"] == "error" for f in r["findings"])


# --- verdict, exit codes, --fix --------------------------------------------------------------------------


def test_verdicts(tmp_path):
    small = audit(write_jsonl(tmp_path / "a.jsonl", unique_records(50)), AuditOptions(**NO_TOK))
    assert small["verdict"]["code"] == "curate-before-you-scale" and small["exit_code"] == 1
    mid = audit(write_jsonl(tmp_path / "b.jsonl", unique_records(500)), AuditOptions(**NO_TOK))
    assert mid["verdict"]["code"] == "small-but-clean" and mid["exit_code"] == 0
    big = audit(write_jsonl(tmp_path / "c.jsonl", unique_records(1200)), AuditOptions(**NO_TOK))
    assert big["verdict"]["code"] == "ready" and big["exit_code"] == 0
    recs = unique_records(1200)
    noisy = audit(write_jsonl(tmp_path / "d.jsonl", recs + recs[:200]), AuditOptions(**NO_TOK))
    assert noisy["verdict"]["code"] == "curate-before-you-scale"


def _app():
    from tunewise.cli import app

    return app


def test_cli_fix_and_exit_codes(tmp_path):
    recs = unique_records(10)
    path = tmp_path / "in.jsonl"
    write_jsonl(path, [*recs, recs[0], "broken", {"prompt": "p\nA:", "completion": ""}])
    before = path.read_bytes()
    out = tmp_path / "clean" / "out.jsonl"
    res = CliRunner().invoke(_app(), ["data", "check", str(path), "--model", "none", "--fix", str(out)])
    assert res.exit_code == 2, res.output
    assert f"{path}:12: (line): not valid JSON" in res.output and "verdict: fix-errors" in res.output
    assert path.read_bytes() == before
    assert [json.loads(x) for x in out.read_text().splitlines()] == recs
    res = CliRunner().invoke(_app(), ["data", "check", str(out), "--model", "none", "--json"])
    assert res.exit_code == 1  # clean but only 10 examples: a size warning
    assert json.loads(res.stdout)["records"]["valid"] == 10
    with pytest.raises(TunewiseError, match="overwrite the input"):
        write_fixed(path, path)


def test_fix_drop_near(tmp_path):
    recs = unique_records(20)
    near = {"prompt": recs[2]["prompt"], "completion": recs[2]["completion"] + " plus"}
    path = write_jsonl(tmp_path / "n.jsonl", [*recs, near])
    r = audit(path, AuditOptions(**NO_TOK))
    info = write_fixed(path, tmp_path / "o.jsonl", r["_near_redundant_lines"])
    assert (info["kept"], info["dropped_near_duplicates"]) == (20, 1)


# --- issue 35: line numbers in the table, "did you mean", the base's tokenizer and context, --fix and leaks ---


def test_cli_table_names_the_lines_of_duplicates_conflicts_and_leaks(tmp_path):
    recs = unique_records(8)
    conflict = {"prompt": recs[3]["prompt"], "completion": " something else"}
    train = write_jsonl(tmp_path / "train.jsonl", [*recs, recs[1], conflict])  # line 9 = line 2, line 10 vs 4
    test = write_jsonl(tmp_path / "test.jsonl", [unique_records(3, seed=9)[0], recs[5]])  # eval line 2 = train 6
    res = CliRunner().invoke(_app(), ["data", "check", train, "--eval", test, "--model", "none"],
                             env={"COLUMNS": "250"})
    rows = {line.split("│")[1].strip(): line for line in res.output.splitlines() if line.count("│") >= 3}
    assert "1 exact (lines 9=2)" in rows["duplicates"], res.output
    assert "(lines 10 vs 4)" in rows["conflicts"]
    assert "1 exact (lines 2=6)" in rows["eval leakage"]
    assert "e.g. eval line 2 = train line 6" in res.output  # and the finding says it too


def test_schema_did_you_mean_for_renamed_fields(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"instruction": "Extract the total", "input": "mail", "answer": "{}"},  # alpaca with 'answer'
        {"question": "2 + 2?", "response": "4"},  # no format at all: which mapping would make it one
        {"prompt": "p\nA:", "completon": " x"},  # a typo
    ])
    res = CliRunner().invoke(_app(), ["data", "check", path, "--model", "none"], env={"COLUMNS": "300"})
    assert f"{path}:1: output: expected a string, got missing; did you mean 'answer'?" in res.output, res.output
    assert "data.columns: {output: answer}" in res.output
    assert "did you mean prompt_completion with 'question' and 'response' renamed" in res.output
    assert f"{path}:3: completion: missing" in res.output and "did you mean 'completon'?" in res.output


def _long_records(n: int, words_each: int) -> list[dict]:
    rng = random.Random(1)
    return [{"prompt": f"{words(rng, words_each)}\nAnswer:", "completion": " " + words(rng, 4)} for _ in range(n)]


@pytest.mark.integration
def test_cli_config_names_the_base_whose_tokenizer_and_context_count(tmp_path, micro_llama_dir):
    import yaml

    records = unique_records(20) + _long_records(2, 400)  # lines 21, 22: longer than the micro base's 256
    train = write_jsonl(tmp_path / "train.jsonl", records)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"base": str(micro_llama_dir), "data": {"train": "train.jsonl",
                                                                          "max_seq_len": 200}}))
    res = CliRunner().invoke(_app(), ["data", "check", "--config", str(cfg), "--json"])
    r = json.loads(res.stdout)
    assert r["file"] == train and r["length"]["model"] == str(micro_llama_dir)
    assert (r["length"]["max_seq_len"], r["length"]["context"]) == (200, 256)
    assert r["length"]["over_context"] == 2 and r["length"]["over_context_lines"] == [21, 22]
    msg = next(f["message"] for f in r["findings"] if "context" in f["message"])
    assert "2 example(s) are longer than" in msg and "context of 256 tokens (e.g. line 21)" in msg
    trunc = next(f["message"] for f in r["findings"] if "will be truncated" in f["message"])
    assert "set data.max_seq_len: 256 (the longest the context allows)" in trunc
    # a flag still wins over the config; without either, the tiny base counts (and the table says which)
    res = CliRunner().invoke(_app(), ["data", "check", train, "--max-seq-len", "4096"], env={"COLUMNS": "250"})
    assert "tokens (tiny)" in res.output and "over its context 512" in res.output
    assert "max_seq_len 4096 is longer than tiny's context of 512 tokens" in res.output


def test_cli_fix_drops_training_records_that_are_in_the_eval_set(tmp_path):
    recs = unique_records(12)
    same_prompt = {"prompt": recs[7]["prompt"], "completion": " another answer"}
    train = write_jsonl(tmp_path / "train.jsonl", recs)
    test = write_jsonl(tmp_path / "test.jsonl", [recs[4], same_prompt, unique_records(1, seed=5)[0]])
    out = tmp_path / "clean.jsonl"
    res = CliRunner().invoke(_app(), ["data", "check", train, "--eval", test, "--model", "none", "--fix",
                                      str(out)], env={"COLUMNS": "250"})
    assert res.exit_code == 2 and "2 in the eval set" in res.output, res.output
    assert [json.loads(x) for x in out.read_text().splitlines()] == [r for i, r in enumerate(recs) if i not in (4, 7)]
    res = CliRunner().invoke(_app(), ["data", "check", str(out), "--eval", test, "--model", "none", "--json"])
    assert json.loads(res.stdout)["leakage"]["exact"] == 0
    # the overwrite rule: never the input, nor the eval file, and both are left as they were
    before = (tmp_path / "train.jsonl").read_bytes(), (tmp_path / "test.jsonl").read_bytes()
    for target, what in ((train, "the input"), (test, "the --eval file")):
        res = CliRunner().invoke(_app(), ["data", "check", train, "--eval", test, "--model", "none", "--fix", target])
        assert isinstance(res.exception, TunewiseError) and f"is {what}" in str(res.exception)
    assert ((tmp_path / "train.jsonl").read_bytes(), (tmp_path / "test.jsonl").read_bytes()) == before
