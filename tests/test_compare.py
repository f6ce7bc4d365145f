"""`tunewise compare` and the report: the verdict logic, reuse of finished runs, and the HTML in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tunewise.compare import CompareRow, CompareSpec, check_spec, default_lr, run_compare, verdict
from tunewise.errors import TunewiseError
from tunewise.rundir import COMPARE_EVAL, RunDir


def row(method, score, rss, time_s=10.0, intruders=None, retention=None):
    return CompareRow(method, score, "accuracy", peak_rss_mb=rss, train_time_s=time_s, intruders=intruders,
                      retention=retention)


def right_wrong(right: int, n: int, offset: int = 0) -> list[dict]:
    """n scored examples of which `right` are right, starting at `offset` (so two methods can differ on some)."""
    return [{"correct": (i - offset) % n < right} for i in range(n)]


def test_verdict_calls_a_gap_inside_its_band_undecided_and_keeps_lora():
    """40 examples: full right on 16, LoRA on 13 -- a 7.5-point gap the band cannot tell from zero."""
    records = {"lora": [right_wrong(13, 40)], "full": [right_wrong(16, 40)]}
    v = verdict({"lora": row("lora", 13 / 40, 380), "full": row("full", 16 / 40, 1000)}, "reasoning",
                records=records)
    assert (v["call"], v["recommendation"], v["examples"], v["seeds"]) == ("undecided", "lora", 40, 1)
    assert v["gap_points"] == pytest.approx(7.5)
    low, high = v["band_points"]
    assert low < 0 < 7.5 < high and high - low > 10
    assert v["needed_examples"] > 40
    assert (f"full fine-tuning - LoRA +7.5 points [{low:+.1f}, {high:+.1f}] on 40 examples, 1 seed: undecided; a "
            f"+-5-point call needs about {v['needed_examples']} examples") in v["text"]
    assert "meanwhile keep LoRA (cheaper)" in v["text"]


def test_verdict_graduates_on_a_reasoning_gap_beyond_its_band():
    records = {"lora": [right_wrong(120, 400)], "full": [right_wrong(200, 400)]}
    v = verdict({"lora": row("lora", 0.30, 400), "full": row("full", 0.50, 900)}, "reasoning", records=records)
    assert (v["call"], v["recommendation"]) == ("full", "full")
    assert v["band_points"][0] > 5 and "graduate to full fine-tuning" in v["text"]


def test_verdict_on_a_representation_gap_beyond_its_band_says_tune_first():
    records = {"lora": [right_wrong(300, 400)], "full": [right_wrong(330, 400)]}
    v = verdict({"lora": row("lora", 0.75, 400), "full": row("full", 0.825, 900)}, "representation",
                records=records)
    assert (v["call"], v["recommendation"]) == ("full", "lora") and "tune LoRA first" in v["text"]


def test_verdict_calls_a_tie_only_when_the_whole_band_is_inside_the_margin():
    same = [right_wrong(2000, 4000)]
    v = verdict({"lora": row("lora", 0.5, 400), "full": row("full", 0.5, 900)}, "sql",
                records={"lora": same, "full": same})
    assert v["call"] == "tie" and "a tie within the 2-point margin; keep LoRA (cheaper)" in v["text"]


def test_verdict_without_per_example_scores_is_undecided():
    v = verdict({"lora": row("lora", 0.95, 380), "full": row("full", 0.962, 1000)}, "representation")
    assert v["call"] is None and v["recommendation"] == "lora" and "undecided" in v["text"]


def test_verdict_says_when_no_method_beats_the_untuned_base():
    rows = {"lora": row("lora", 0.067, 400), "full": row("full", 0.05, 900)}
    v = verdict(rows, "reasoning", base_score=0.1)
    assert v["lines"][0].startswith("No method beats the untuned base (0.1) at this budget")
    assert "No method" not in verdict(rows, "reasoning", base_score=0.06)["text"]
    assert "No method" not in verdict(rows, "reasoning")["text"]  # an encoder: no untuned score


def test_verdict_reports_qlora_tradeoff_intruders_and_forgetting():
    ret = {"arithmetic": {"before": 0.8, "after": 0.4, "rel_change": -0.5, "higher_is_better": True}}
    v = verdict({"lora": row("lora", 0.9, 400, 10, intruders=7, retention=ret),
                 "qlora": row("qlora", 0.89, 300, 14),
                 "full": row("full", 0.9, 1000, 8, intruders=0)}, "representation")
    assert "QLoRA used 25% less peak memory and 40% more time than LoRA, scoring -1.0 points" in v["text"]
    assert "lora 7, full 0" in v["text"]
    assert "lora on 'arithmetic' (50% worse)" in v["text"]
    # the advice is the config line that mixes the skill back in, and that line is a valid config
    line = "data.train: [{path: train.jsonl, weight: 0.9}, {probe: arithmetic, weight: 0.1}]"
    assert line in v["text"]
    import yaml

    from tunewise.config import validate_config

    cfg = validate_config({"data": yaml.safe_load(line.replace("data.train:", "train:"))})
    assert [(s.path, s.probe, s.weight) for s in cfg.data.sources()] == [("train.jsonl", None, 0.9),
                                                                        (None, "arithmetic", 0.1)]


def test_bad_specs_are_listed_together():
    with pytest.raises(TunewiseError) as e:
        check_spec(CompareSpec(methods=["lora", "adapterX"], rank=0, task_kind="poetry"))
    msg = e.value.message
    assert "adapterX" in msg and "--rank must be > 0" in msg and "poetry" in msg


def test_default_lr_depends_on_model_size():
    assert default_lr("lora", 5_000_000)[0] == 5e-3
    assert default_lr("lora", 7_000_000_000)[0] == 3e-5


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.integration
def test_compare_end_to_end_reuses_finished_runs_and_renders(tiny_base_dir, tmp_path):
    spec = CompareSpec(base=str(tiny_base_dir), task="structured", methods=["lora", "full"], out=str(tmp_path / "c"),
                       train_size=48, eval_size=12, max_steps=4, batch_size=8, probes=["arithmetic"])
    first = run_compare(spec, quiet=True, log=lambda *_: None)
    rows = first["rows"]
    assert set(rows) == {"lora", "full"}
    for r in rows.values():
        assert 0.0 <= r["score"] <= 1.0 and r["trainable_params"] > 0 and r["peak_rss_mb"] > 0
        assert r["intruders"] is not None and "arithmetic" in r["retention"]
    assert rows["lora"]["trainable_params"] < rows["full"]["trainable_params"]
    v = first["verdict"]
    assert v["call"] in ("lora", "full", "tie", "undecided") and v["examples"] == 12 and v["seeds"] == 1
    assert v["gap_points"] == pytest.approx(100 * (rows["full"]["score"] - rows["lora"]["score"]), abs=0.01)
    low, high = v["band_points"]
    assert low <= v["gap_points"] <= high
    assert v["call"] == "undecided" and high - low > 10  # 12 examples cannot decide a call
    for r in rows.values():  # the sequence length was fitted to the data: nothing was cut
        assert json.loads(Path(r["run_dir"], "summary.json").read_text())["examples"]["truncated"] == 0
    assert first["base"]["metric"] == "slot_f1" and 0.0 <= first["base"]["score"] <= 1.0  # the untuned base, same split
    mtime = (tmp_path / "c/runs/lora/summary.json").stat().st_mtime
    second = run_compare(spec, quiet=True, log=lambda *_: None)
    assert all(r["reused"] for r in second["rows"].values())
    assert (tmp_path / "c/runs/lora/summary.json").stat().st_mtime == mtime

    from tunewise.report import write_report

    report = write_report(tmp_path / "c")
    text = report.read_text()
    assert 'id="comparison"' in text and "data:image/png;base64," in text and "http" not in text.split("<body>")[1]
    assert (tmp_path / "c" / "loss_curves.png").is_file()
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    render_and_check(browser, report, tmp_path)


@pytest.mark.integration
def test_compare_trains_and_scores_again_when_the_base_or_the_data_changed(tiny_base_dir, tmp_path):
    """A finished run is reused only for the same base files, config and examples: rebuilding the shipped base
    in place, or asking for more training examples, must not show the old run's numbers."""
    from safetensors.torch import load_file, save_file

    base = tmp_path / "base"
    shutil.copytree(tiny_base_dir, base)
    spec = CompareSpec(base=str(base), task="sql", methods=["lora"], out=str(tmp_path / "c"), train_size=16,
                       eval_size=4, max_steps=2, batch_size=8, probes=[], analyze=False)
    quiet = {"quiet": True, "log": lambda *_: None}
    run_compare(spec, **quiet)
    assert run_compare(spec, **quiet)["rows"]["lora"]["reused"]
    base_key = json.loads((tmp_path / "c/base/results.json").read_text())["cache_key"]

    weights = load_file(base / "model.safetensors")  # the base replaced in place, same name and size
    save_file({k: v * 0.5 for k, v in weights.items()}, base / "model.safetensors", metadata={"format": "pt"})
    assert not run_compare(spec, **quiet)["rows"]["lora"]["reused"]
    assert json.loads((tmp_path / "c/base/results.json").read_text())["cache_key"] != base_key
    assert run_compare(spec, **quiet)["rows"]["lora"]["reused"]

    spec.train_size = 24  # other examples under the same data folder
    assert not run_compare(spec, **quiet)["rows"]["lora"]["reused"]


def render_and_check(browser: str, report: Path, tmp_path: Path) -> None:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chrome-profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri()],
                   capture_output=True, timeout=120)
    dom = subprocess.run([browser, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert '<table id="comparison">' in dom and "verdict" in dom
    from PIL import Image

    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert hi - lo > 100  # not a blank page
    histogram = img.histogram()
    assert max(histogram) < 0.97 * sum(histogram)  # more than one flat colour


def test_report_of_a_folder_without_results_is_a_clear_error(tmp_path):
    from tunewise.report import write_report

    with pytest.raises(TunewiseError, match="neither compare.json nor summary.json"):
        write_report(tmp_path)


def test_compare_json_is_valid_json_for_machines(tmp_path):
    # the verdict survives a JSON round trip (compare.json is what the report and scripts read)
    v = verdict({"lora": row("lora", 0.5, 100), "full": row("full", 0.5, 200)}, "sql")
    assert json.loads(json.dumps(v)) == v


def test_cached_evaluation_is_rescored_when_the_scorer_heads_another_metric(tmp_path):
    """A cache written before the `mr` scorer's headline became slot F1 must not show exact match; compare's older
    layout (eval.json beside predictions.jsonl) is still read, and moved into the eval layout."""
    from tunewise.compare import evaluate_method
    from tunewise.rundir import LEGACY_EVAL, EvalFiles
    from tunewise.tasks import make_task

    data = tmp_path / "data"
    make_task("structured", data, {"train": 4, "validation": 2, "test": 4}, seed=0)
    out = tmp_path / "base"
    out.mkdir()
    files, old = EvalFiles(out / "eval"), EvalFiles(out, LEGACY_EVAL)
    stale = {"scorer": "mr", "primary": "exact_match", "metrics": {"exact_match": 0.5}, "score": 0.5}
    old.results.write_text(json.dumps(stale))
    old.predictions.write_text("{}\n")
    fresh = evaluate_method("tiny", data, 2, files, earlier=old)
    assert fresh["primary"] == "slot_f1" and fresh["score"] == fresh["metrics"]["slot_f1"]
    assert json.loads(files.results.read_text())["primary"] == "slot_f1" and len(files.read_predictions()) == 2
    current = {**fresh, "score": 0.123}  # a cache that matches the scorer is reused as it is
    files.results.write_text(json.dumps(current))
    assert evaluate_method("tiny", data, 2, files)["score"] == 0.123
    assert evaluate_method("tiny", data, 3, files)["score"] != 0.123  # another limit: scored again
    files.results.write_text(json.dumps(current))
    assert evaluate_method("tiny", data, 2, files, model_key="another base")["score"] != 0.123
    # an older compare's cache under the same key: reused, and written into the layout
    old.results.write_text(json.dumps(current))
    old.predictions.write_text('{"index": 0}\n')
    files.results.unlink()
    assert evaluate_method("tiny", data, 2, files, earlier=old)["score"] == 0.123
    assert json.loads(files.results.read_text())["score"] == 0.123 and files.read_predictions() == [{"index": 0}]


def long_data(folder: Path, n: int = 8, words: int = 30) -> Path:
    """A user's data folder whose examples are longer than 160 tokens (compare's old fixed length)."""
    folder.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        lines = [json.dumps({"prompt": f"Summarise record {i}: " + " ".join(["alpha beta gamma"] * words),
                             "completion": f" record {i} " + "delta " * 10}) for i in range(n)]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "meta.json").write_text(json.dumps({"task": "summaries", "scorer": "exact", "max_new_tokens": 8}))
    return folder


@pytest.mark.integration
def test_compare_fits_the_sequence_length_to_long_examples_and_cuts_nothing(tiny_base_dir, tmp_path):
    data = long_data(tmp_path / "long")
    spec = CompareSpec(base=str(tiny_base_dir), task=None, data=str(data), methods=["lora"], out=str(tmp_path / "c"),
                       eval_size=2, max_steps=1, batch_size=4, probes=[], analyze=False)
    said: list[str] = []
    result = run_compare(spec, quiet=True, log=said.append)
    assert result["max_seq_len"] > 160
    summary = json.loads(Path(result["rows"]["lora"]["run_dir"], "summary.json").read_text())
    assert summary["examples"]["truncated"] == 0 and summary["examples"]["used"] == 8
    assert any("every one of the 16 training and validation examples fits" in m for m in said)


def test_compare_refuses_to_cut_many_examples_and_counts_the_cut_when_allowed(tmp_path):
    from tunewise.compare import sequence_length

    data = long_data(tmp_path / "long")
    spec = CompareSpec(base="tiny", task=None, data=str(data), max_seq_len=160)
    with pytest.raises(TunewiseError, match=r"16 of 16 training and validation examples are longer than "
                                            r"max_seq_len 160 tokens") as e:
        sequence_length(spec, data, None, log=lambda *_: None)
    assert "--allow-truncation" in e.value.hint
    said: list[str] = []
    allowed = CompareSpec(base="tiny", task=None, data=str(data), max_seq_len=160, allow_truncation=True)
    assert sequence_length(allowed, data, None, log=said.append) == 160
    assert said and said[0].startswith("warning: 16 of 16 training and validation examples")


@pytest.mark.integration
def test_compare_scores_with_your_own_metric_and_bands_it(tiny_base_dir, tmp_path):
    """--scorer FILE.py:FUNCTION: every method and the untuned base are scored with it, and the band is taken
    over its per-example numbers."""
    scorer = tmp_path / "my_metric.py"
    scorer.write_text("def act_match(prediction, reference):\n"
                      "    return {'act': float(prediction.strip().split('(')[0] == reference.split('(')[0])}\n")
    spec = CompareSpec(base=str(tiny_base_dir), task="structured", methods=["lora", "full"], out=str(tmp_path / "c"),
                       train_size=16, eval_size=6, max_steps=1, batch_size=8, probes=[], analyze=False,
                       scorer=f"{scorer}:act_match")
    result = run_compare(spec, quiet=True, log=lambda *_: None)
    for r in result["rows"].values():
        assert r["metric"] == "act"
        records = RunDir(r["run_dir"]).eval_files(COMPARE_EVAL).read_predictions()
        assert r["score"] == pytest.approx(sum(x["values"]["act"] for x in records) / 6)
    assert result["base"]["metric"] == "act" and result["verdict"]["examples"] == 6
    with pytest.raises(TunewiseError, match="--scorer"):
        check_spec(CompareSpec(scorer="no_such_module_here:fn"))


def test_a_row_is_written_with_compare_jsons_keys():
    """CompareRow.as_dict is compare.json's row, key for key (the report and scripts read these names); a seed
    without a score leaves the spread out."""
    from tunewise.compare import seeds_row

    keys = ["method", "score", "metric", "metrics", "retention", "trainable_params", "total_params",
            "output_size_mb", "train_time_s", "tokens_per_s", "peak_rss_mb", "peak_cuda_mb", "final_train_loss",
            "final_eval_loss", "lr", "steps", "guard_events", "intruders", "run_dir", "reused", "seeds", "scores",
            "run_dirs"]
    two = seeds_row([CompareRow("lora", 0.5, run_dir="a"), CompareRow("lora", 0.7, run_dir="b")])
    assert list(two.as_dict()) == keys + ["score_sd"]
    assert (two.score, two.scores, two.run_dirs) == (pytest.approx(0.6), [0.5, 0.7], ["a", "b"])
    assert two.score_sd == pytest.approx(0.1414, abs=1e-4)
    unscored = seeds_row([CompareRow("full", None, run_dir="a"), CompareRow("full", 0.7, run_dir="b")])
    assert list(unscored.as_dict()) == keys and unscored.score is None
    assert CompareRow.from_dict(two.as_dict()) == two
