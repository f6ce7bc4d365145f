"""Built-in task generators: deterministic bytes, the trainer's format, references that score as right."""

from __future__ import annotations

import json
import operator
import re
import sqlite3

import pytest
from typer.testing import CliRunner

from tunewise.errors import TunewiseError
from tunewise.tasks import TASKS, make_task
from tunewise.tasks.base import SPLITS
from tunewise.tasks.classify import LABELS
from tunewise.tasks.scorers import make_scorer, parse_mr

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
SIZES = {"train": 40, "validation": 10, "test": 20}


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.suffix in (".jsonl", ".json")}


def _dump(db):
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.mark.parametrize("name", list(TASKS))
def test_same_seed_same_bytes(tmp_path, name):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_task(name, a, SIZES, seed=3)
    make_task(name, b, SIZES, seed=3)
    make_task(name, c, SIZES, seed=4)
    assert _files(a) == _files(b)
    assert _files(a)["test.jsonl"] != _files(c)["test.jsonl"]
    if name == "sql":
        assert (a / "db.sqlite").read_bytes() == (b / "db.sqlite").read_bytes()
        assert _dump(a / "db.sqlite") != _dump(c / "db.sqlite")


def test_test_split_does_not_depend_on_train_size(tmp_path):
    make_task("math", tmp_path / "small", {"train": 5, "validation": 2, "test": 10})
    make_task("math", tmp_path / "big", {"train": 50, "validation": 7, "test": 10})
    assert (tmp_path / "small" / "test.jsonl").read_bytes() == (tmp_path / "big" / "test.jsonl").read_bytes()


@pytest.mark.parametrize("name", list(TASKS))
def test_format_meta_and_references_score_right(tmp_path, name):
    meta = make_task(name, tmp_path, SIZES)
    assert set(meta) >= {"task", "scorer", "stop", "max_new_tokens", "files", "seed", "sizes"}
    assert json.loads((tmp_path / "meta.json").read_text()) == meta
    scorer = make_scorer(meta["scorer"], meta["scorer_options"], tmp_path)
    for split in SPLITS:
        records = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
        assert len(records) == SIZES[split]
        for r in records:
            assert set(r) == {"prompt", "completion"}
            assert r["prompt"].endswith(":") and "\n" in r["prompt"]  # a clear cue on its own line
            assert r["completion"].startswith(" ") and not r["completion"].startswith("  ")
            assert not any(s in r["completion"] for s in meta["stop"] if s != "\n" or name != "math")
            s = scorer.score(r["completion"], r["completion"])
            assert s.correct, (r, s.reason)


def test_sql_meta_names_its_database_and_references_return_rows(tmp_path):
    meta = make_task("sql", tmp_path, SIZES)
    assert meta["db"] == "db.sqlite" and meta["scorer_options"]["db"] == "db.sqlite"
    conn = sqlite3.connect(tmp_path / meta["db"])
    assert {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")} == {
        "restaurants", "products", "people"}
    for line in (tmp_path / "test.jsonl").read_text().splitlines():
        rows = conn.execute(json.loads(line)["completion"]).fetchall()
        assert rows and rows != [(0,)]


def test_content_of_each_task(tmp_path):
    make_task("structured", tmp_path / "s", {"train": 200, "validation": 0, "test": 0})
    acts = set()
    for line in (tmp_path / "s" / "train.jsonl").read_text().splitlines():
        act, slots = parse_mr(json.loads(line)["completion"])
        acts.add(act)
        assert act == "request_attribute" or slots[0][0] == "name"
    assert acts == {"inform", "recommend", "confirm", "give_opinion", "request_attribute"}
    meta = make_task("classify", tmp_path / "c", {"train": 200, "validation": 0, "test": 0})
    labels = {json.loads(x)["completion"].strip() for x in (tmp_path / "c" / "train.jsonl").read_text().splitlines()}
    assert labels == set(LABELS) == set(meta["labels"])
    make_task("math", tmp_path / "m", {"train": 50, "validation": 0, "test": 0})
    for line in (tmp_path / "m" / "train.jsonl").read_text().splitlines():
        sol = json.loads(line)["completion"]
        steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", sol)
        assert steps, sol
        for a, op, b, c in steps:  # every worked step is correct arithmetic
            assert OPS[op](int(a), int(b)) == int(c), sol
        assert sol.splitlines()[-1] == f"#### {steps[-1][3]}"


def test_math_hard_tests_longer_chains_and_larger_factors_than_it_trains_on(tmp_path):
    make_task("math-hard", tmp_path, {"train": 300, "validation": 20, "test": 50})

    def chains(split):
        for line in (tmp_path / f"{split}.jsonl").read_text().splitlines():
            steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", json.loads(line)["completion"])
            yield steps, [int(x) for a, op, b, _ in steps if op == "*" for x in (a, b)]

    train = list(chains("train")) + list(chains("validation"))
    assert max(len(steps) for steps, _ in train) == 3
    assert max(f for _, factors in train for f in factors) <= 9
    for steps, factors in chains("test"):
        assert len(steps) == 5 and min(factors) >= 11, steps
    # train and validation are exactly the `math` task's
    make_task("math", tmp_path / "math", {"train": 300, "validation": 20, "test": 50})
    assert (tmp_path / "train.jsonl").read_bytes() == (tmp_path / "math" / "train.jsonl").read_bytes()


def test_math_chain_carries_one_count_through_its_steps_and_is_parameterised(tmp_path):
    from tunewise.tasks.math_chain import DEFAULT_STEPS, HIGH, chain_spec

    make_task("math-chain", tmp_path, {"train": 200, "validation": 10, "test": 40})
    again = tmp_path / "again"
    make_task("math-chain", again, {"train": 200, "validation": 10, "test": 40})
    assert (tmp_path / "test.jsonl").read_bytes() == (again / "test.jsonl").read_bytes()  # deterministic
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["scorer"] == "number" and meta["task"] == "math-chain"
    for split in ("train", "test"):
        for line in (tmp_path / f"{split}.jsonl").read_text().splitlines():
            sol = json.loads(line)["completion"]
            steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", sol)
            assert len(steps) == DEFAULT_STEPS, sol
            for i, (a, op, b, c) in enumerate(steps):  # correct, and each step starts from the last result
                assert OPS[op](int(a), int(b)) == int(c) and int(c) > 0, sol
                assert i == 0 or a == steps[i - 1][3], sol
                assert op == "*" or int(b) <= HIGH, sol
            assert sol.splitlines()[-1] == f"#### {steps[-1][3]}"
    longer = chain_spec(6, 2, 20)
    assert longer.name == "math-chain-6x2-20"
    make_task(longer.name, tmp_path / "six", {"train": 5, "validation": 0, "test": 5}, spec=longer)
    sol = json.loads((tmp_path / "six" / "test.jsonl").read_text().splitlines()[0])["completion"]
    assert len(re.findall(r" = ", sol)) == 6
    assert json.loads((tmp_path / "six" / "meta.json").read_text())["task"] == "math-chain-6x2-20"
    with pytest.raises(TunewiseError, match="steps >= 1"):
        chain_spec(0)


def test_prompts_fit_the_tiny_base(tmp_path, tiny_base_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base_dir)
    for name in TASKS:
        make_task(name, tmp_path / name, {"train": 100, "validation": 0, "test": 0})
        for line in (tmp_path / name / "train.jsonl").read_text().splitlines():
            r = json.loads(line)
            n_prompt = len(tok(r["prompt"])["input_ids"])
            n_total = len(tok(r["prompt"] + r["completion"])["input_ids"])
            assert n_prompt < 120 and n_total + 1 <= 256, (name, n_prompt, n_total)
            assert n_total - n_prompt < TASKS[name].max_new_tokens  # room for the whole completion


def test_bad_arguments(tmp_path):
    with pytest.raises(TunewiseError, match="unknown task"):
        make_task("poetry", tmp_path)
    with pytest.raises(TunewiseError, match="must be >= 0"):
        make_task("math", tmp_path, {"train": -1})


def test_cli_list_and_make(tmp_path):
    from tunewise.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["tasks", "list", "--json"])
    assert res.exit_code == 0, res.output
    names = {r["name"] for r in json.loads(res.output)}
    assert names == {"structured", "classify", "sql", "math", "math-hard", "math-chain", "arithmetic", "lm", "knowledge", "follows", "kl"}
    res = runner.invoke(app, ["tasks", "make", "sql", "--out", str(tmp_path / "sql"), "--train", "7",
                              "--validation", "2", "--test", "3", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "sql" / "train.jsonl").read_text().splitlines()) == 7
    assert (tmp_path / "sql" / "db.sqlite").is_file()
    res = runner.invoke(app, ["tasks", "make", "nope", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0


def test_sql_test_questions_are_never_training_questions(tmp_path):
    make_task("sql", tmp_path, {"train": 400, "validation": 20, "test": 60})
    train = {json.loads(x)["prompt"] for x in (tmp_path / "train.jsonl").read_text().splitlines()}
    for split in ("validation", "test"):
        prompts = [json.loads(x)["prompt"] for x in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
        assert not set(prompts) & train


def test_ensure_task_keeps_matching_data_and_rewrites_the_rest(tmp_path):
    from tunewise.tasks import ensure_task

    out = ensure_task("structured", tmp_path / "d", {"train": 4, "validation": 2, "test": 2}, seed=0)
    mtime = (out / "train.jsonl").stat().st_mtime_ns
    assert ensure_task("structured", out, {"train": 4, "validation": 2, "test": 2}, seed=0) == out
    assert (out / "train.jsonl").stat().st_mtime_ns == mtime  # the same files, untouched
    ensure_task("structured", out, {"train": 5, "validation": 2, "test": 2}, seed=0)
    assert len((out / "train.jsonl").read_text().splitlines()) == 5
    ensure_task("sql", out, {"train": 5, "validation": 2, "test": 2}, seed=0)  # another task: no leftovers mixed in
    assert json.loads((out / "meta.json").read_text())["task"] == "sql" and (out / "db.sqlite").is_file()
