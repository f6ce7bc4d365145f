"""`tunewise pilot` (and its old spelling, `advise --pilot`) end to end on the shipped tiny base with a tiny budget (explicit small slices)."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner


def test_pilot_on_the_tiny_base_writes_json_html_and_a_config(tiny_base_dir, tmp_path):
    from tunewise.cli import app
    from tunewise.config import load_run_config
    from tunewise.tasks import ensure_task

    data = ensure_task("structured", tmp_path / "task", {"train": 40, "validation": 8, "test": 4}, 0)
    out = tmp_path / "pilot"
    res = CliRunner().invoke(app, ["pilot", "--base", "tiny", "--data", str(data / "train.jsonl"),
                                   "--eval", str(data / "validation.jsonl"), "--points", "8,12,16",
                                   "--epochs", "1", "--eval-size", "8", "--find-lr-steps", "6",
                                   "--budget", "60", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Recommendation:" in res.output and "left]" in res.output  # progress with the time left
    result = json.loads((out / "pilot.json").read_text())
    assert {(r["method"], r["n"]) for r in result["runs"]} == {(m, n) for m in ("lora", "full") for n in (8, 12, 16)}
    assert result["scorer"] == "mr" and result["validation_n"] == 8
    for m in ("lora", "full"):
        p = result["predictions"][m]
        assert p["low"] <= p["score"] <= p["high"]
        assert (out / "find_lr" / m / "find_lr.png").is_file()
    v = result["verdict"]
    assert v["evidence"] in ("measured", "rule", "memory") and v["recommendation"] in ("lora", "full")
    # the largest slice both methods trained on, paired example by example on the same 8 validation examples
    assert result["paired"]["n_train"] == 16 and result["paired"]["n_eval"] == 8
    assert all(len(r["items"]) == 8 for r in result["runs"]) and "Resolution: on 8 validation examples" in v["text"]
    html = (out / "pilot.html").read_text()
    assert 'id="pilot"' in html and "data:image/png;base64" in html
    cfg = load_run_config(out / "recommended.yaml")
    assert cfg.method == v["recommendation"] and cfg.train.lr == result["lr"][cfg.method]
    assert yaml.safe_load((out / "recommended.yaml").read_text())["data"]["train"].endswith("train.jsonl")
    # trained weights are not kept: the pilot keeps only what its report needs
    assert not any((out / "runs").glob("*/adapter")) and not any((out / "runs").glob("*/model"))


def test_pilot_refuses_bad_input_with_every_problem(tmp_path):
    from tunewise.advise.pilot import PilotSpec, check

    problems = check(PilotSpec(base="tiny", train=str(tmp_path / "nope.jsonl"), methods=["lora", "ful"],
                               budget_min=0, points=[32, 16], task_kind="poetry"))
    text = " ".join(problems)
    for word in ("--data", "ful", "--task-kind", "--budget", "--points"):
        assert word in text


def test_budget_planning_grows_slices_only_as_far_as_the_time_allows():
    from tunewise.advise.pilot import plan_next

    done = [{"seconds": 10.0, "n": 10}, {"seconds": 20.0, "n": 10}]  # the slower method: 2 s per example
    assert plan_next(done, 10, 1000, left_s=10_000, methods=2, remaining_points=2) == 40  # 4x fits
    assert plan_next(done, 10, 1000, left_s=300, methods=2, remaining_points=2) == 20  # only 2x fits
    assert plan_next(done, 10, 1000, left_s=50, methods=2, remaining_points=2) is None
    assert plan_next(done, 10, 12, left_s=10_000, methods=2, remaining_points=1) == 12  # capped at the data


def test_point_cost_from_own_runs_else_from_the_range_test():
    from tunewise.advise.pilot import PilotSpec, point_cost

    spec = PilotSpec(base="tiny", train="x.jsonl", batch_size=8, epochs=2)
    assert point_cost([], {}, "lora", 64, spec, eval_s=10) is None
    assert point_cost([], {"lora": 0.5}, "lora", 64, spec, eval_s=10) == 16 * 0.5 + 10  # 8 batches x 2 epochs
    assert point_cost([], {"lora": 0.5}, "full", 64, spec, eval_s=10) == 18  # the other method's pace
    runs = [{"method": "full", "n": 32, "seconds": 40.0}]
    assert point_cost(runs, {"lora": 0.5}, "full", 64, spec, eval_s=10) == 80.0


def test_pilot_flags_without_pilot_are_refused(tmp_path):
    from tunewise.cli import app

    res = CliRunner().invoke(app, ["advise", "--task", "structured", "--model", "tiny", "--eval", "x.jsonl"])
    assert res.exit_code != 0 and "only with --pilot" in str(res.exception)  # --data is the advice's flag too


def test_a_budget_that_cannot_buy_a_measurement_is_refused_up_front(tmp_path):
    """The scoring rate is measured on a few examples first; a budget too small for the base and two methods
    to be scored once is refused before any of it is spent, naming the budget that would do."""
    import re

    from tunewise.cli import app
    from tunewise.tasks import make_task

    data = tmp_path / "data"
    make_task("structured", data, {"train": 32, "validation": 16, "test": 4}, seed=0)
    out = tmp_path / "pilot"
    res = CliRunner().invoke(app, ["advise", "--pilot", "--base", "tiny", "--data", str(data / "train.jsonl"),
                                   "--eval", str(data / "validation.jsonl"), "--eval-size", "16",
                                   "--budget", "0.01", "--out", str(out)])
    from tunewise.errors import TunewiseError

    assert isinstance(res.exception, TunewiseError)  # the CLI prints it as one line and exits 2
    notes = [line for line in res.output.splitlines() if "tunewise pilot" in line]
    assert len(notes) == 1 and "is now `tunewise pilot`" in notes[0]  # the old spelling runs, pointing to the new
    text = str(res.exception)
    assert "--budget 0.01 min cannot buy a measurement" in text
    wanted = int(re.search(r"give --budget (\d+) or more", text).group(1))
    assert wanted >= 1
    assert not (out / "runs").exists()  # nothing was trained


def test_without_a_range_test_the_lr_is_the_size_default_of_the_meta_count(tmp_path):
    """--find-lr-steps 0: each method's lr is the size default for the base's parameters, counted on the meta
    device (tunewise.model_size) as compare and continual count them."""
    from tunewise.advise.pilot import Clock, PilotSpec, _learning_rates
    from tunewise.defaults import default_lr
    from tunewise.model_size import parameter_count

    spec = PilotSpec(base="tiny", train="x.jsonl", find_lr_steps=0)
    lrs, notes, step_s = _learning_rates(spec, Clock(5, lambda *_: None), tmp_path / "pool.jsonl", tmp_path)
    n = parameter_count("tiny")
    assert lrs == {m: default_lr(m, n)[0] for m in ("lora", "full")} and step_s == {}
    assert all("--find-lr-steps 0" in note for note in notes.values())
