"""Scorers and metric arithmetic, on hand-checked cases (no models)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from tunewise.errors import TunewiseError
from tunewise.tasks.metrics import accuracy, macro_f1, prf, set_counts
from tunewise.tasks.scorers import (
    ClassifyScorer,
    JsonScorer,
    MRScorer,
    NormalizedScorer,
    NumberScorer,
    Scorer,
    SqlScorer,
    aggregate,
    final_number,
    make_scorer,
    parse_mr,
    schema_errors,
)
from tunewise.tasks.sqlexec import has_order_by, open_readonly, run_query, same_result

# ------------------------------------------------------------------------------------------------ metrics


def test_prf_hand_checked():
    assert prf(3, 1, 2) == pytest.approx((0.75, 0.6, 2 * 0.75 * 0.6 / 1.35))
    assert prf(0, 0, 0) == (1.0, 1.0, 1.0)  # nothing expected, nothing predicted
    assert prf(0, 2, 0) == (0.0, 0.0, 0.0)


def test_set_counts_multiset():
    assert set_counts(["a", "b", "b"], ["b", "c"]) == (1, 2, 1)


def test_macro_f1_hand_checked_and_matches_sklearn():
    refs = ["a", "a", "b", "b", "c"]
    preds = ["a", "b", "b", "b", None]
    # a: tp1 fp0 fn1 -> 2/3; b: tp2 fp1 fn0 -> 0.8; c: tp0 fp0 fn1 -> 0
    assert macro_f1(preds, refs) == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    from sklearn.metrics import f1_score

    sk = f1_score(refs, [p or "none" for p in preds], labels=["a", "b", "c"], average="macro", zero_division=0)
    assert macro_f1(preds, refs, ["a", "b", "c"]) == pytest.approx(sk)
    assert accuracy([True, False, True, True]) == 0.75
    assert accuracy([]) == 0.0


# ------------------------------------------------------------------------------------------------ text


def test_exact_and_normalized():
    assert Scorer().score(" Paris\n", "Paris").correct
    assert not Scorer().score("paris", "Paris").correct
    n = NormalizedScorer()
    assert n.score("  The  ANSWER is yes. ", "the answer is yes").correct
    r = n.score("no", "yes")
    assert not r.correct and "differs" in r.reason


def test_classify_scorer_accuracy_and_macro_f1():
    s = ClassifyScorer(["booking", "price", "menu"])
    refs = [" booking", " price", " menu", " menu"]
    preds = [" booking\nmore text", " Price.", " weather", ""]
    scored = [s.score(p, r) for p, r in zip(preds, refs, strict=True)]
    assert [x.correct for x in scored] == [True, True, False, False]
    assert "not one of the labels" in scored[2].reason and scored[3].reason == "empty prediction"
    m = aggregate(s, scored, refs)
    assert m["accuracy"] == 0.5
    # booking F1 1, price F1 1, menu: tp0 fn2 -> 0
    assert m["macro_f1"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------------ numbers


def test_final_number():
    assert final_number("12 + 5 = 17 pens.\n#### 17") == (17.0, True)
    assert final_number("so the answer is 1,250 dollars") == (1250.0, False)
    assert final_number("#### -3.5") == (-3.5, True)
    assert final_number("no digits") == (None, False)
    s = NumberScorer()
    assert s.score(" 5 + 3 = 8\n#### 8", " ... #### 8").correct
    assert s.score("answer 8.0", "#### 8").correct
    wrong = s.score("#### 9 then 8", "#### 8")
    assert not wrong.correct and "expected 8" in wrong.reason
    assert s.score("nothing", "#### 8").reason == "no number in the prediction"
    m = s.aggregate([s.score("#### 8", "#### 8"), s.score("8", "#### 8")])
    assert m == {"accuracy": 1.0, "format_rate": 0.5}


# ------------------------------------------------------------------------------------------------ MR


def test_parse_mr():
    assert parse_mr(" inform(name[Aurora Bistro], food[thai])") == ("inform", [("name", "aurora bistro"),
                                                                             ("food", "thai")])
    assert parse_mr("request_attribute(food[])") == ("request_attribute", [("food", "")])
    assert parse_mr("inform()") == ("inform", [])
    assert parse_mr("inform(name[x], food thai)") is None
    assert parse_mr("just some words") is None
    assert parse_mr("") is None


def test_mr_scorer_hand_checked():
    s = MRScorer()
    ref = "inform(name[Aurora Bistro], food[thai], rating[good])"
    assert s.score(" inform(food[thai], name[Aurora Bistro], rating[good])", ref).correct  # slot order free
    partial = s.score("inform(name[Aurora Bistro], food[indian])", ref)
    assert not partial.correct and partial.counts == {"tp": 1, "fp": 1, "fn": 2, "act": 1, "parsed": 1}
    act = s.score("confirm(name[Aurora Bistro], food[thai], rating[good])", ref)
    assert not act.correct and "act" in act.reason
    bad = s.score("inform(name[Aurora", ref)
    assert not bad.correct and "not a meaning representation" in bad.reason
    m = s.aggregate([s.score(ref, ref), partial, bad])
    # tp 3+1+0, fp 0+1+0, fn 0+2+3 -> P 0.8, R 4/9
    assert m["slot_precision"] == pytest.approx(0.8)
    assert m["slot_recall"] == pytest.approx(4 / 9)
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["parse_rate"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------------ JSON


def test_json_scorer_fields_and_validity():
    s = JsonScorer()
    ref = '{"name": "Ana", "age": 30, "tags": ["a", "b"]}'
    assert s.score('```json\n{"age": 30, "name": "Ana", "tags": ["a", "b"]}\n```', ref).correct
    part = s.score('{"name": "Ana", "age": 31, "tags": ["a"]}', ref)
    assert not part.correct and part.counts["tp"] == 2 and part.counts["fp"] == 1 and part.counts["fn"] == 2
    bad = s.score('{"name": "Ana",', ref)
    assert not bad.correct and bad.reason.startswith("not valid JSON")
    m = s.aggregate([s.score(ref, ref), part, bad])
    assert m["valid_json"] == pytest.approx(2 / 3)
    # tp 4+2+0, fp 0+1+0, fn 0+2+4
    assert m["field_precision"] == pytest.approx(6 / 7)
    assert m["field_recall"] == pytest.approx(6 / 12)


def test_json_schema_subset_and_scorer():
    schema = {"type": "object", "required": ["name", "age"], "additionalProperties": False,
              "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}
    assert schema_errors({"name": "a", "age": 3}, schema) == []
    errs = schema_errors({"name": 1, "extra": True}, schema)
    assert any("missing required field 'age'" in e for e in errs)
    assert any("unexpected field 'extra'" in e for e in errs)
    assert any("expected string" in e for e in errs)
    assert schema_errors({"name": "a", "age": -1}, schema) == ["$.age: -1 < minimum 0"]
    s = JsonScorer(schema)
    r = s.score('{"name": "a", "age": 3, "x": 1}', '{"name": "a", "age": 3, "x": 1}')
    assert not r.correct and r.reason.startswith("schema:")
    assert s.aggregate([r])["schema_valid"] == 0.0


# ------------------------------------------------------------------------------------------------ SQL


@pytest.fixture()
def people_db(tmp_path):
    path = tmp_path / "people.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE people (name TEXT, job TEXT, city TEXT, age INTEGER)")
    conn.executemany("INSERT INTO people VALUES (?, ?, ?, ?)", [
        ("Ana Chen", "pilot", "Oslo", 31), ("Leo Berg", "baker", "Lima", 45), ("Maya Khan", "pilot", "Lima", 28),
        ("Omar Silva", "nurse", "Oslo", 52)])
    conn.commit()
    conn.close()
    return path


def test_sql_same_rows_different_text(people_db):
    s = SqlScorer(people_db)
    ref = "SELECT name FROM people WHERE job = 'pilot';"
    assert s.score("select p.name AS who from people p where p.job='pilot'", ref).correct
    assert s.score("SELECT name FROM people WHERE age < 40 AND job != 'baker'", ref).correct  # same 2 rows
    # rows in another order: still right without ORDER BY in the reference
    assert s.score("SELECT name FROM people WHERE job = 'pilot' ORDER BY name DESC", ref).correct
    r = s.score("SELECT name FROM people WHERE city = 'Oslo'", ref)
    assert not r.correct and "different result" in r.reason


def test_sql_order_by_matters_only_when_reference_orders(people_db):
    s = SqlScorer(people_db)
    ref = "SELECT name FROM people ORDER BY age DESC;"
    assert s.score("SELECT name FROM people ORDER BY age DESC", ref).correct
    assert not s.score("SELECT name FROM people ORDER BY age ASC", ref).correct
    assert has_order_by(ref) and not has_order_by("SELECT 'order by' FROM people")


def test_sql_numbers_compare_by_value(people_db):
    s = SqlScorer(people_db)
    assert s.score("SELECT SUM(age) / 4.0 FROM people", "SELECT AVG(age) FROM people;").correct
    assert same_result([(2,)], [(2.0,)], ordered=False)
    assert not same_result([(1,), (1,)], [(1,)], ordered=False)  # multisets, not sets


def test_sql_failures_are_wrong_with_reason(people_db):
    s = SqlScorer(people_db)
    ref = "SELECT name FROM people;"
    cases = {
        "SELECT nme FROM people": "no such column",
        "SELEC name FROM people": "syntax error",
        "": "empty query",
        "SELECT 1; SELECT 2": "one statement",
        "DELETE FROM people": "not authorized",
        "DROP TABLE people": "not authorized",
        f"ATTACH DATABASE '{people_db}.x' AS x": "not authorized",
        "PRAGMA writable_schema = 1": "not authorized",
    }
    for sql, why in cases.items():
        r = s.score(sql, ref)
        assert not r.correct and r.counts["exec_error"] == 1, sql
        assert why in r.reason, (sql, r.reason)
    assert not (people_db.parent / "people.sqlite.x").exists()
    conn = sqlite3.connect(people_db)
    assert conn.execute("SELECT COUNT(*) FROM people").fetchone() == (4,)  # nothing was changed
    m = s.aggregate([s.score("SELECT nme FROM people", ref), s.score(ref, ref)])
    assert m["exec_error_rate"] == 0.5 and m["execution_accuracy"] == 0.5


def test_sql_runaway_query_is_interrupted(people_db):
    conn = open_readonly(people_db)
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    r = run_query(conn, forever, max_steps=200_000)
    assert not r.ok and "interrupted" in r.error
    assert run_query(conn, "SELECT COUNT(*) FROM people").rows == [(4,)]  # the connection still works


def test_sql_reference_failure_and_bad_database(people_db, tmp_path):
    s = SqlScorer(people_db)
    r = s.score("SELECT 1", "SELECT * FROM missing_table")
    assert not r.correct and r.reason.startswith("the reference query failed")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 50)
    with pytest.raises(TunewiseError, match="cannot be read as a SQLite database"):
        SqlScorer(junk)
    with pytest.raises(TunewiseError, match="does not exist"):
        make_scorer("sql", {"db": str(tmp_path / "nope.sqlite")})
    with pytest.raises(TunewiseError, match="needs a SQLite database"):
        make_scorer("sql", {})
    with pytest.raises(TunewiseError, match="unknown scorer"):
        make_scorer("bleu")


# ------------------------------------------------------------------------------------------------ issue 35


def test_json_scorer_names_the_fields_and_reports_each_fields_accuracy():
    s = JsonScorer()
    ref = '{"total": 12.5, "currency": "EUR", "items": [{"qty": 1}, {"qty": 2}]}'
    part = s.score('{"total": 12.0, "items": [{"qty": 1}, {"qty": 3}], "notes": "x"}', ref)
    assert part.reason == ("fields differ: total (got 12.0, expected 12.5), items[1].qty (got 3, expected 2); "
                           "missing currency; extra notes")
    assert part.values == {"field:total": 0.0, "field:currency": 0.0, "field:items[].qty": 0.5}
    m = s.aggregate([s.score(ref, ref), part, s.score("not json", ref)])
    assert m["field:total"] == pytest.approx(1 / 3) and m["field:items[].qty"] == pytest.approx(1.5 / 3)
    assert m["field:currency"] == pytest.approx(1 / 3)


def test_your_own_scorer_from_a_file_and_a_module(tmp_path, monkeypatch):
    from tunewise.tasks.scorers import CallableScorer, check_scorer, make_scorer, primary_of

    (tmp_path / "my_metrics.py").write_text(
        "def prefix(prediction, reference):\n"
        "    n = sum(1 for _ in zip(prediction, reference))\n"
        "    same = next((i for i, (a, b) in enumerate(zip(prediction, reference)) if a != b), n)\n"
        "    return {'score': same / max(len(reference), 1), 'length': len(prediction)}\n"
        "def same(prediction, reference):\n"
        "    return prediction.strip() == reference.strip()\n")
    s = make_scorer(f"{tmp_path / 'my_metrics.py'}:prefix")
    assert isinstance(s, CallableScorer) and primary_of(s.name) is None
    a, b = s.score("abcd", "abcd"), s.score("abxx", "abcd")
    assert a.correct and not b.correct and b.reason == "score 0.5" and b.values == {"score": 0.5, "length": 4.0}
    assert s.aggregate([a, b]) == {"score": 0.75, "length": 4.0} and s.primary == "score"
    monkeypatch.chdir(tmp_path)  # a module name is imported from the working directory, as `python -m` does
    t = make_scorer("my_metrics:same")
    assert t.score(" x", "x").correct and t.aggregate([t.score("x", "x"), t.score("y", "x")]) == {"score": 0.5}
    for bad, words in (("my_metrics:nope", "has no function 'nope'"), ("no_such_module:f", "cannot import"),
                       ("my_metrics", "unknown scorer"), ("my_metrics:1x", "is not MODULE:FUNCTION")):
        with pytest.raises(TunewiseError, match=words):
            check_scorer(bad)


@pytest.mark.integration
def test_cli_eval_with_your_own_scorer(tmp_path, micro_llama_dir):
    from tunewise.cli import app

    (tmp_path / "metrics.py").write_text("def length_ratio(prediction, reference):\n"
                                         "    return {'ratio': min(len(prediction) / max(len(reference), 1), 1.0),"
                                         " 'correct': prediction.strip() == reference.strip()}\n")
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"prompt": f"{i} + 1 =", "completion": f" {i + 1}"}) + "\n" for i in range(3)))
    res = CliRunner().invoke(app, ["eval", str(micro_llama_dir), "--data", str(test), "--json", "--max-new-tokens",
                                   "3", "--scorer", f"{tmp_path / 'metrics.py'}:length_ratio"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output[res.output.index("{"):])
    assert payload["primary"] == "ratio" and set(payload["metrics"]) == {"ratio"}
    assert payload["scorer"].endswith("metrics.py:length_ratio") and 0.0 <= payload["score"] <= 1.0
    res = CliRunner().invoke(app, ["eval", str(micro_llama_dir), "--data", str(test), "--scorer", "tw_no_such_metrics:f"])
    assert isinstance(res.exception, TunewiseError) and "cannot import tw_no_such_metrics" in str(res.exception)
