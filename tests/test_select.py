"""`tunewise data select` and `tasks make --noise`: planted bad records are left out, every left-out record has its
reason, the input is untouched, and every refusal is one line that writes nothing."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

import numpy as np
import pytest

from tunewise.analysis.select_pick import pick
from tunewise.data.audit import AuditOptions
from tunewise.data.select_filter import screen
from tunewise.tasks import make_task

_capsys = None


@dataclass
class Result:
    exit_code: int
    output: str


@pytest.fixture(autouse=True)
def _cli(tmp_path, monkeypatch, capsys):
    """Commands run in-process through the real entry point (tunewise.cli.main), which turns errors into lines."""
    global _capsys
    _capsys = capsys
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))


def _run(*args) -> Result:
    from tunewise.cli import main

    _capsys.readouterr()
    try:
        main([*map(str, args)])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = _capsys.readouterr()
    return Result(code, out + err)


def _select(*args) -> Result:
    return _run("data", "select", *args)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --- tasks make --noise ---------------------------------------------------------------------------------------


def test_noise_plants_a_known_share_and_leaves_the_clean_records_as_they_were(tmp_path):
    meta = make_task("structured", tmp_path / "noisy", {"train": 200, "validation": 5, "test": 5}, seed=3, noise=0.3)
    make_task("structured", tmp_path / "clean", {"train": 200, "validation": 5, "test": 5}, seed=3)
    noisy, clean = _lines(tmp_path / "noisy" / "train.jsonl"), _lines(tmp_path / "clean" / "train.jsonl")
    bad = {b["line"]: b for b in meta["noise"]["bad"]}
    assert len(noisy) == 200 and len(bad) == 60 == meta["noise"]["bad_records"]
    assert meta["noise"]["kinds"] == {"wrong-answer": 15, "truncated-answer": 15, "duplicate": 15, "off-task": 15}
    assert json.loads((tmp_path / "noisy" / "meta.json").read_text())["noise"]["bad"] == meta["noise"]["bad"]
    for i, (n, c) in enumerate(zip(noisy, clean, strict=True), start=1):
        if i not in bad:
            assert n == c  # the noise draws from its own stream
            continue
        rec, orig = json.loads(n), json.loads(c)
        kind = bad[i]["kind"]
        if kind == "duplicate":
            assert n == noisy[bad[i]["of"] - 1] and bad[i]["of"] < i and bad[i]["of"] not in bad
        elif kind == "truncated-answer":
            assert orig["completion"].startswith(rec["completion"]) and rec["completion"] != orig["completion"]
        elif kind == "wrong-answer":
            assert rec["prompt"] == orig["prompt"] and rec["completion"] != orig["completion"]
        else:
            assert rec["prompt"].startswith("Message:")  # a classify example in a structured file


def test_noise_outside_0_to_1_is_one_line_and_writes_nothing(tmp_path):
    res = _run("tasks", "make", "structured", "--out", tmp_path / "t", "--noise", "1.5")
    assert res.exit_code != 0 and "--noise must be a share" in res.output
    assert not (tmp_path / "t").exists()


# --- the measured claim ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, seed", [("structured", 0), ("classify", 1)])
def test_select_half_leaves_out_most_planted_bad_records_with_a_reason_for_each(tmp_path, tiny_base_dir, name, seed):
    task = tmp_path / "task"
    meta = make_task(name, task, {"train": 400, "validation": 5, "test": 50}, seed=seed, noise=0.3)
    data, out = task / "train.jsonl", tmp_path / "subset.jsonl"
    before = _sha(data)
    res = _select(data, "--k", 200, "--out", out, "--base", tiny_base_dir, "--test", task / "test.jsonl")
    assert res.exit_code == 0, res.output
    assert _sha(data) == before  # the input is byte-identical afterwards
    report = json.loads((tmp_path / "subset.select_report.json").read_text())
    kept = _lines(out)
    assert len(kept) == 200 == report["kept"]
    source = _lines(data)
    left = {x["line"]: x for x in report["left_out_records"]}
    kept_lines = [i for i in range(1, 401) if i not in left]
    assert [source[i - 1] for i in kept_lines] == kept  # every other line is left out, with its reason
    assert all(x["reason"] and x["detail"] for x in left.values()) and len(left) == 200
    bad = [b["line"] for b in meta["noise"]["bad"]]
    caught = sum(line in left for line in bad) / len(bad)
    rng = random.Random(0)
    chance = np.mean([len(set(bad) - set(rng.sample(range(1, 401), 200))) / len(bad) for _ in range(50)])
    assert chance < 0.6  # a random half leaves out about half of them
    assert caught >= 0.8, (caught, {b["kind"]: left.get(b["line"], {}).get("reason") for b in meta["noise"]["bad"]})
    dup = next(b for b in meta["noise"]["bad"] if b["kind"] == "duplicate" and b["of"] not in left)
    assert left[dup["line"]]["detail"] == f"exact duplicate of line {dup['of']}"
    assert report["uncovered"] == [] and all(c["after"] > 0 for c in report["coverage"].values())
    assert "not chosen for diversity" in (tmp_path / "subset.select_report.html").read_text()


# --- refusals: one line, nothing written ----------------------------------------------------------------------


def _small(tmp_path, n: int = 30):
    data = tmp_path / "data.jsonl"
    make_task("classify", tmp_path / "t", {"train": n, "validation": 1, "test": 1}, seed=1)
    data.write_bytes((tmp_path / "t" / "train.jsonl").read_bytes())
    return data


@pytest.mark.parametrize("args, message", [
    (["--k", "0"], "--k must be a positive number"),
    (["--k", "-3"], "--k must be a positive number"),
    (["--k", "31"], "--k 31 is more than the 30 records"),
    (["--k", "5", "--base", "./no/such/model"], "base model path './no/such/model' does not exist"),
    (["--k", "5", "--by", "speed"], "--by 'speed'"),
])
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, micro_llama_dir, args, message):
    data = _small(tmp_path)
    before = set(tmp_path.iterdir())
    res = _select(data, "--out", tmp_path / "out.jsonl", "--base", micro_llama_dir, *args)
    assert res.exit_code != 0
    assert message in res.output and "Traceback" not in res.output
    assert set(tmp_path.iterdir()) == before


@pytest.mark.parametrize("content", [None, b"\x00\x01garbage\xff", b""])
def test_an_unreadable_file_is_one_line_and_writes_nothing(tmp_path, micro_llama_dir, content):
    data = tmp_path / "data.jsonl"
    if content is not None:
        data.write_bytes(content)
    res = _select(data, "--k", 2, "--out", tmp_path / "out.jsonl", "--base", micro_llama_dir)
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert str(data) in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None else ["data.jsonl"])


def test_out_follows_the_ownership_rule(tmp_path, micro_llama_dir):
    data = _small(tmp_path)
    out = tmp_path / "out.jsonl"
    out.write_text("mine\n")
    res = _select(data, "--k", 5, "--out", out, "--base", micro_llama_dir)
    assert res.exit_code != 0 and "did not write it" in res.output and out.read_text() == "mine\n"
    assert _select(data, "--k", 5, "--out", out, "--base", micro_llama_dir, "--force").exit_code == 0
    res = _select(data, "--k", 6, "--out", out, "--base", micro_llama_dir)  # our own file: replaced
    assert res.exit_code == 0, res.output
    assert len(_lines(out)) == 6
    report = json.loads((tmp_path / "out.select_report.json").read_text())
    assert report["scoring"]["cached"] and "prompted_pass" not in report["scoring"]["seconds"]  # scores reused
    res = _select(data, "--k", 5, "--out", data, "--base", micro_llama_dir, "--force")
    assert res.exit_code != 0 and "is the input file" in res.output


# --- formats, over-length, the filter's reasons ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_the_subset_is_written_in_the_input_format(tmp_path, micro_llama_dir, suffix):
    from tunewise.data.select_write import _encode
    from tunewise.data.sources import iter_source

    rows = [json.loads(line) for line in _lines(_small(tmp_path))]
    data = tmp_path / f"data{suffix}"
    data.write_bytes(_encode(rows, suffix[1:]))
    out = tmp_path / f"out{suffix}"
    res = _select(data, "--k", 10, "--out", out, "--base", micro_llama_dir)
    assert res.exit_code == 0, res.output
    got = [r.obj for r in iter_source(out)]
    assert len(got) == 10 and all(r in rows for r in got)


def test_records_over_the_context_and_known_bad_ones_get_their_reason(tmp_path, micro_llama_dir):
    rows = [{"prompt": f"Question {i}: what is {i} plus {i}?\nAnswer:", "completion": f" {2 * i}"} for i in range(30)]
    rows[3] = {"prompt": "word " * 400 + "\nAnswer:", "completion": " long"}  # micro llama has 256 positions
    rows[5] = dict(rows[1])  # exact duplicate of line 2
    rows[7] = {"prompt": rows[2]["prompt"], "completion": " 999"}  # conflicts with line 3 (no majority)
    rows[9] = {"prompt": "x", "completion": "  "}  # empty answer
    data, test = tmp_path / "d.jsonl", tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test.write_text(json.dumps({"prompt": "unrelated?", "completion": " no"}) + "\n" + json.dumps(rows[11]) + "\n")
    res = _select(data, "--k", 19, "--out", tmp_path / "o.jsonl", "--base", micro_llama_dir, "--test", test, "--json")
    assert res.exit_code == 0, res.output
    left = {x["line"]: x for x in json.loads((tmp_path / "o.select_report.json").read_text())["left_out_records"]}
    assert left[4]["reason"] == "over-length" and "more than the base's context of 256" in left[4]["detail"]
    assert left[6]["detail"] == "exact duplicate of line 2"
    assert left[8]["reason"] == "conflict" and left[3]["reason"] == "conflict" and left[8]["other"] == 3
    assert left[10]["reason"] == "empty-answer"
    assert left[12]["reason"] == "test-leakage" and left[12]["detail"] == f"the same record as {test} line 2"
    assert len(left) == 11


def test_conflicts_keep_the_majority_answer(tmp_path):
    rows = [{"prompt": "p?", "completion": " a"}, {"prompt": "p?", "completion": " b"},
            {"prompt": "p? ", "completion": " a"}, {"prompt": "q?", "completion": " c"}]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = screen(data, AuditOptions(model=None))
    assert [(x.line, x.reason, x.other) for x in s.left_out] == [(2, "conflict", 1), (3, "near-duplicate", 1)]


def test_exact_duplicates_vote_for_the_majority_answer(tmp_path):
    """Three copies of one answer against one other: the copies go as duplicates, yet they are the majority, so
    the first copy stays and the lone answer goes (counting each distinct record once made it a tie that lost
    both, which on template-made sets cost most of the data)."""
    rows = [{"prompt": "p?", "completion": " a"}, {"prompt": "p?", "completion": " a"},
            {"prompt": "p?", "completion": " b"}, {"prompt": "p?", "completion": " a"}]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = screen(data, AuditOptions(model=None))
    assert [r.line for r in s.candidates] == [1]
    assert [(x.line, x.reason, x.other) for x in s.left_out] == [(2, "duplicate", 1), (3, "conflict", 1),
                                                                  (4, "duplicate", 1)]


def test_near_duplicates_come_back_only_when_k_needs_them(tmp_path, micro_llama_dir):
    """A template-made set (one instruction, a word apart) has few distinct records: --k above them re-admits the
    near duplicates with sound answers for the diversity pick to choose among, says how many, and names the kept
    record each one left out is close to; a --k the distinct records cover leaves them out as before."""
    from tunewise.data.select_filter import readmit_near

    rule = ("Translate the colour word at the end of this message into French. Answer with the French word only, "
            "in lower case, with no article, no punctuation and no explanation of any kind, because a program "
            "reads the answer and compares it with a list of known words. The word is:")
    rows = [{"prompt": f"{rule} {w}",
             "completion": f" {f}"} for w, f in (("red", "rouge"), ("blue", "bleu"), ("green", "vert"),
                                                  ("black", "noir"), ("white", "blanc"), ("grey", "gris"))]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = screen(data, AuditOptions(model=None))
    distinct = len(s.candidates)
    assert distinct < len(rows) and {x.reason for x in s.left_out} == {"near-duplicate"}
    assert readmit_near(s, distinct) is s
    back = readmit_near(s, distinct + 1)
    assert back.readmitted == len(rows) - distinct and len(back.candidates) == len(rows) and not back.left_out
    res = _select(data, "--k", distinct + 1, "--out", tmp_path / "o.jsonl", "--base", micro_llama_dir)
    assert res.exit_code == 0, res.output
    assert f"{len(rows) - distinct} near duplicates came back as candidates" in res.output
    report = json.loads((tmp_path / "o.select_report.json").read_text())
    assert report["kept"] == distinct + 1 and report["near_duplicates_readmitted"] == len(rows) - distinct
    assert all(x["reason"] in ("not-chosen", "low-quality") for x in report["left_out_records"])


# --- the pick -------------------------------------------------------------------------------------------------


def test_k_center_spreads_over_clusters_and_quality_drops_the_worst():
    rng = np.random.default_rng(0)
    centers = np.eye(4, 16)
    emb = np.concatenate([c + 0.01 * rng.standard_normal((25, 16)) for c in centers])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    badness = rng.random(100)
    p = pick(4, badness, emb, [set() for _ in range(100)], ("diversity",))
    assert sorted(set((p.chosen // 25).tolist())) == [0, 1, 2, 3]  # one per cluster
    q = pick(10, badness, emb, [set() for _ in range(100)], ("quality",))
    assert set(q.chosen.tolist()) == set(np.argsort(badness)[:10].tolist())
    assert len(q.low_quality) == 90 and len(q.not_chosen) == 0


def test_every_group_stays_represented_even_when_its_records_score_badly():
    badness = np.arange(50, dtype=float)
    groups = [{"label common"} for _ in range(49)] + [{"label rare"}]  # the rare label is the worst-scored
    p = pick(5, badness, np.eye(50), groups)
    assert 49 in p.chosen and p.uncovered == []
    tight = pick(1, badness, np.eye(50), groups)
    assert tight.uncovered == ["label common"]
