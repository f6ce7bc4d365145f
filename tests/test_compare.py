"""`tunewise compare` and the report: the verdict logic, reuse of finished runs, and the HTML in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tunewise.compare import CompareSpec, check_spec, default_lr, run_compare, verdict
from tunewise.errors import TunewiseError


def row(method, score, rss, time_s=10.0, intruders=None, retention=None):
    return {"method": method, "score": score, "peak_rss_mb": rss, "train_time_s": time_s, "intruders": intruders,
            "retention": retention}


def test_verdict_keeps_lora_when_within_two_points():
    v = verdict({"lora": row("lora", 0.95, 380), "full": row("full", 0.962, 1000)}, "representation")
    assert v["recommendation"] == "lora"
    assert "LoRA is within 1.2 points of full fine-tuning at 38% of the memory: keep LoRA." in v["text"]


def test_verdict_graduates_on_reasoning_gap():
    v = verdict({"lora": row("lora", 0.30, 400), "full": row("full", 0.39, 900)}, "reasoning")
    assert v["recommendation"] == "full"
    assert "LoRA trails by 9.0 points on a reasoning task: graduate to full fine-tuning." in v["text"]


def test_verdict_on_a_representation_gap_says_tune_first():
    v = verdict({"lora": row("lora", 0.80, 400), "full": row("full", 0.90, 900)}, "representation")
    assert v["recommendation"] == "lora" and "tune LoRA first" in v["text"]


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
    assert "QLoRA used 25% less peak memory and 40% more time than LoRA" in v["text"]
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
    assert first["verdict"]["text"]
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
    base_key = json.loads((tmp_path / "c/base/eval.json").read_text())["cache_key"]

    weights = load_file(base / "model.safetensors")  # the base replaced in place, same name and size
    save_file({k: v * 0.5 for k, v in weights.items()}, base / "model.safetensors", metadata={"format": "pt"})
    assert not run_compare(spec, **quiet)["rows"]["lora"]["reused"]
    assert json.loads((tmp_path / "c/base/eval.json").read_text())["cache_key"] != base_key
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
    """An eval.json written before the `mr` scorer's headline became slot F1 must not show exact match."""
    from tunewise.compare import evaluate_method
    from tunewise.tasks import make_task

    data = tmp_path / "data"
    make_task("structured", data, {"train": 4, "validation": 2, "test": 4}, seed=0)
    out = tmp_path / "base"
    out.mkdir()
    stale = {"scorer": "mr", "primary": "exact_match", "metrics": {"exact_match": 0.5}, "score": 0.5}
    (out / "eval.json").write_text(json.dumps(stale))
    fresh = evaluate_method("tiny", data, 2, out)
    assert fresh["primary"] == "slot_f1" and fresh["score"] == fresh["metrics"]["slot_f1"]
    assert json.loads((out / "eval.json").read_text())["primary"] == "slot_f1"
    current = {**fresh, "score": 0.123}  # a cache that matches the scorer is reused as it is
    (out / "eval.json").write_text(json.dumps(current))
    assert evaluate_method("tiny", data, 2, out)["score"] == 0.123
    assert evaluate_method("tiny", data, 3, out)["score"] != 0.123  # another limit: scored again
    (out / "eval.json").write_text(json.dumps(current))
    assert evaluate_method("tiny", data, 2, out, model_key="another base")["score"] != 0.123
