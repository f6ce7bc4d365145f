"""`tunewise continual`: the forgetting arithmetic, config errors, and a two-stage run on the shipped base."""

from __future__ import annotations

import json

import pytest

from tunewise.continual import ContinualConfig, forgetting, load_continual_config, run_continual
from tunewise.errors import ConfigError


def test_forgetting_bands_pair_the_best_earlier_stage_with_the_last():
    from tunewise.continual import forgetting_bands

    right = [(1.0, 1.0)] * 30 + [(0.0, 1.0)] * 10
    worse = [(1.0, 1.0)] * 10 + [(0.0, 1.0)] * 30
    stages = [{"stage": 1, "scores": {"a": 0.75, "b": 0.1}, "items": {"a": right, "b": worse}},
              {"stage": 2, "scores": {"a": 0.25, "b": 0.75}, "items": {"a": worse, "b": right}}]
    bands = forgetting_bands(stages, ["a", "b"])
    assert set(bands) == {"a"} and bands["a"]["best_stage"] == 1
    assert bands["a"]["drop_points"] == pytest.approx(50.0) and bands["a"]["decided"]
    assert bands["a"]["band_points"][0] > 20  # 20 of 40 examples lost: decided
    assert forgetting_bands([{k: v for k, v in s.items() if k != "items"} for s in stages], ["a", "b"]) is None


def test_average_forgetting_is_best_earlier_minus_final():
    # rows: after stage i; columns: task j
    m = [[0.8, 0.1, 0.0],
         [0.5, 0.9, 0.1],
         [0.4, 0.6, 0.7]]
    assert forgetting(m) == pytest.approx(((0.8 - 0.4) + (0.9 - 0.6)) / 2)
    assert forgetting([[0.5]]) == 0.0


def test_bad_config_lists_problems(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("tasks: [sql]\nmethods: [{method: lora, r: 0}]\nepochz: 3\n")
    with pytest.raises(ConfigError) as e:
        load_continual_config(p)
    text = str(e.value)
    assert "tasks" in text and "methods.0.r" in text and "epochz" in text


@pytest.mark.integration
def test_two_stages_lora_and_full_write_the_matrix_and_resume(tmp_path):
    cfg = ContinualConfig(base="tiny", tasks=["structured", "sql"],
                          methods=[{"method": "lora", "r": 4}, {"method": "full"}], epochs=1, batch_size=8,
                          train_size=16, eval_size=4, probes=["lm"], out=str(tmp_path / "c"))
    summary = run_continual(cfg, quiet=True, log=lambda *_: None)
    for label in ("lora-r4", "full"):
        r = summary["methods"][label]
        assert len(r["matrix"]) == 2 and all(len(row) == 2 for row in r["matrix"])
        assert all(0.0 <= v <= 1.0 for row in r["matrix"] for v in row)
        assert len(r["intruders"]) == 2 and all(isinstance(n, int) for n in r["intruders"])
        assert "lm" in r["probes"][1]
        band = r["forgetting_bands"]["structured"]  # the first task's drop, paired on its 4 test examples
        low, high = band["band_points"]
        assert band["examples"] == 4 and low <= band["drop_points"] <= high and high - low > 10
        assert band["drop_points"] == pytest.approx(100 * (r["matrix"][0][0] - r["matrix"][1][0]), abs=0.01)
    stage = tmp_path / "c" / "lora-r4" / "stage-2-sql"
    assert (stage / "merged" / "config.json").is_file()  # the LoRA stage was merged into a plain model
    written = json.loads((tmp_path / "c" / "continual.json").read_text())
    assert written["tasks"] == ["structured", "sql"]
    assert (tmp_path / "c" / "continual.png").stat().st_size > 1000
    mtime = (stage / "stage.json").stat().st_mtime
    run_continual(cfg, quiet=True, log=lambda *_: None)  # finished stages are not redone
    assert (stage / "stage.json").stat().st_mtime == mtime
    # other test examples: the data is written again and every stage is trained and scored again
    fewer = cfg.model_copy(update={"eval_size": 5, "methods": cfg.methods[:1]})
    run_continual(fewer, quiet=True, log=lambda *_: None)
    assert (stage / "stage.json").stat().st_mtime != mtime
    assert json.loads((tmp_path / "c" / "data" / "sql" / "meta.json").read_text())["sizes"]["test"] == 5
