"""The lr range test: its math on synthetic curves with a known answer, a real ramp on a micro Llama that diverges,
the CLI on the tiny base (--find-lr --write), and the in-place YAML edit."""

from __future__ import annotations

import json
import math
import random

import pytest
import yaml
from typer.testing import CliRunner

from tunewise.train.lr_finder import RangeTestError, divergence_index, ema_smooth, exp_schedule, suggest

# ---------------------------------------------------------------------------------------------- pure math


def test_exp_schedule_is_geometric_with_both_ends():
    lrs = exp_schedule(1e-5, 1e-1, 41)
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1e-1)
    ratios = {round(b / a, 9) for a, b in zip(lrs, lrs[1:])}
    assert len(ratios) == 1 and ratios.pop() == pytest.approx(10 ** 0.1)
    with pytest.raises(ValueError):
        exp_schedule(1e-2, 1e-3, 10)


def test_ema_bias_correction_keeps_a_constant_constant():
    assert ema_smooth([3.0] * 10, 0.9) == pytest.approx([3.0] * 10)
    # without the correction the first value would be 0.3
    assert ema_smooth([3.0, 1.0], 0.9)[0] == pytest.approx(3.0)
    assert ema_smooth([3.0, 1.0], 0.9)[1] == pytest.approx((0.9 * 0.3 + 0.1) / (1 - 0.81))


def _descent(lrs, centre=1e-3, width=0.5, blow_up_at=None):
    """A loss that falls fastest (per decade) exactly at `centre` and explodes past `blow_up_at`."""
    out = []
    for lr in lrs:
        x = (math.log10(lr) - math.log10(centre)) / width
        loss = 5.0 - 3.0 * math.tanh(x)
        if blow_up_at and lr > blow_up_at:
            loss += 2.0 * (lr / blow_up_at) ** 2
        out.append(loss)
    return out


def _valley(lrs, best=1e-2, blow_up_at=None):
    """A loss whose minimum is exactly at `best` (a parabola in log lr), exploding past `blow_up_at`."""
    out = []
    for lr in lrs:
        loss = 2.0 + (math.log10(lr) - math.log10(best)) ** 2
        if blow_up_at and lr > blow_up_at:
            loss += 5.0 * (lr / blow_up_at) ** 2
        out.append(loss)
    return out


def test_known_minimum_unsmoothed_gives_a_tenth_of_it():
    lrs = exp_schedule(1e-6, 1.0, 61)  # 0.1 decade per step: 1e-2 is a grid point
    s = suggest(lrs, _valley(lrs), beta=0.0)
    assert s.min_loss_lr == pytest.approx(1e-2, rel=1e-6)
    assert s.lr == pytest.approx(1e-3, rel=1e-6) and s.divisor == 10
    assert s.diverged_at is None


def test_steepest_point_of_a_known_curve_is_reported():
    lrs = exp_schedule(1e-6, 1.0, 61)
    s = suggest(lrs, _descent(lrs, blow_up_at=1e-1), beta=0.0)
    assert s.steepest_lr == pytest.approx(1e-3, rel=0.01)


def test_smoothing_lags_the_minimum_by_a_few_steps_only():
    lrs = exp_schedule(1e-6, 1.0, 61)
    s = suggest(lrs, _valley(lrs), beta=0.8)
    # an EMA with beta 0.8 lags by about beta / (1 - beta) = 4 steps = 0.4 decade here
    assert 1e-2 <= s.min_loss_lr <= 10 ** (-2 + 0.5)


def test_divergence_stops_the_search_and_the_suggestion_is_below_it():
    lrs = exp_schedule(1e-6, 1.0, 61)
    losses = _valley(lrs, best=1e-3, blow_up_at=1e-2)
    s = suggest(lrs, losses)
    assert s.diverged_at is not None and s.diverged_lr is not None
    assert s.lr < s.min_loss_lr < s.diverged_lr
    assert s.min_loss_index < s.diverged_at
    assert s.lr == pytest.approx(s.min_loss_lr / 10)


def test_a_non_finite_loss_is_divergence_not_a_crash():
    lrs = exp_schedule(1e-6, 1.0, 40)
    losses = _descent(lrs)[:30] + [math.nan] + [math.inf] * 9
    assert divergence_index(losses, ema_smooth(losses[:30]) + [math.inf] * 10) == 30
    s = suggest(lrs, losses)
    assert s.diverged_at == 30 and s.lr < lrs[30]


def test_a_loss_that_never_falls_gives_no_suggestion():
    lrs = exp_schedule(1e-6, 1.0, 30)
    with pytest.raises(RangeTestError, match="never fell"):
        suggest(lrs, [5.0 + 0.01 * i for i in range(30)])
    with pytest.raises(RangeTestError, match="diverged"):
        suggest(lrs, [5.0, 5.0, math.inf] + [math.inf] * 27)


# The raw losses of a LoRA ramp the pilot ran on the tiny base's sql data (8-row batches, lr 5e-6 .. 0.15): one
# batch's loss differs from the next by more than anything the lr does
SQL_NOISE = [0.91, 2.99, 0.0, 0.77, 1.03, 0.0, 1.15, 3.24, 2.4, 3.21, 0.89, 1.78, 3.05, 0.0, 2.43, 0.76, 0.57, 1.63,
             1.97, 0.72, 3.42, 2.86, 0.76, 2.63, 3.35, 4.68, 10.07]


def test_a_minimum_inside_the_batch_noise_gives_no_suggestion():
    lrs = exp_schedule(5e-6, 0.15, len(SQL_NOISE))
    with pytest.raises(RangeTestError, match="batch-to-batch noise"):
        suggest(lrs, SQL_NOISE)
    # noise on a curve that falls by much more than it: a suggestion, near the true minimum (1e-2)
    rng = random.Random(0)
    lrs = exp_schedule(1e-6, 1.0, 40)
    s = suggest(lrs, [x + rng.gauss(0, 0.5) for x in _valley(lrs)])
    assert 1e-3 < s.min_loss_lr < 1e-1


# A LoRA ramp on smollm2, structured, 8-row batches (benchmarks/find_lr_validation.py, 2026-12-02): some batches
# sit at 5 where most sit at 2, so a mean-and-deviation test called its clear fall (to 0.3-0.6) noise.
SMOLLM2_LORA = [2.1, 1.96, 2.46, 5.08, 3.1, 2.44, 5.39, 2.02, 2.09, 1.76, 5.27, 1.75, 1.87, 2.6, 2.18, 2.4, 1.76, 1.7,
                1.67, 4.11, 1.36, 1.71, 1.05, 0.9, 0.62, 0.74, 0.39, 0.54, 0.47, 0.4, 0.59, 0.3, 0.72, 2.27, 1.35, 7.99,
                5.68]
# A LoRA ramp on the tiny base's math data: batches at 0.2 or at 4-8 whatever the lr.
TINY_MATH = [7.66, 7.69, 0.17, 0.22, 0.19, 5.92, 0.21, 7.69, 7.55, 3.83, 0.19, 7.75, 4.13, 0.58, 5.72, 0.22, 2.23, 2.12,
             2.31, 0.19, 5.21, 0.17, 5.56, 0.22, 4.37, 0.31, 4.38, 3.85, 6.31, 3.74, 3.7, 2.47, 5.27, 5.13, 8.45, 9.95,
             5.97, 5.47, 38.86]


def test_heavy_tailed_batches_a_clear_fall_is_a_suggestion_and_bimodal_noise_is_not():
    s = suggest(exp_schedule(1e-6, 0.1, 40)[: len(SMOLLM2_LORA)], SMOLLM2_LORA, divisor=2)
    assert s.min_loss_lr == pytest.approx(9.43e-3, rel=0.01) and s.lr == pytest.approx(s.min_loss_lr / 2)
    with pytest.raises(RangeTestError, match="rank test"):
        suggest(exp_schedule(5e-6, 0.5, 40)[: len(TINY_MATH)], TINY_MATH)


def test_rank_tail_counts_arrangements_exactly():
    from tunewise.train.lr_finder import rank_tail

    assert rank_tail(1, 1, 1) == 0.5 and rank_tail(1, 1, 0) == 1.0
    assert rank_tail(12, 5, 60) == pytest.approx(1 / math.comb(17, 5))  # every window value below every head one
    # against brute force over every split of 7 ranks into 4 head and 3 window values
    from itertools import combinations

    us = [sum(w < h for w in win for h in set(range(7)) - set(win)) for win in combinations(range(7), 3)]
    for u in range(13):
        assert rank_tail(4, 3, u) == pytest.approx(sum(x >= u for x in us) / len(us))


def test_set_in_text_keeps_comments_and_order():
    from tunewise.yaml_edit import set_in_text

    text = "# my run\nbase: tiny  # the shipped one\ntrain:\n  epochs: 2   # keep\n  lr: 5.0e-3       # old\n"
    new = set_in_text(text, "train", "lr", 0.00123)
    assert new == "# my run\nbase: tiny  # the shipped one\ntrain:\n  epochs: 2   # keep\n  lr: 0.00123       # old\n"
    added = set_in_text("base: tiny\ntrain:\n    epochs: 2 # two\nguards: {}\n", "train", "lr", 0.01)
    assert added == "base: tiny\ntrain:\n    lr: 0.01\n    epochs: 2 # two\nguards: {}\n"
    assert yaml.safe_load(set_in_text("base: tiny", "train", "lr", 0.5)) == {"base": "tiny", "train": {"lr": 0.5}}
    assert yaml.safe_load(set_in_text("train: {epochs: 1}\n", "train", "lr", 0.5))["train"] == {"epochs": 1, "lr": 0.5}


def test_set_yaml_value_refuses_what_it_cannot_edit(tmp_path):
    from tunewise.errors import TunewiseError
    from tunewise.yaml_edit import set_yaml_value

    path = tmp_path / "c.yaml"
    path.write_text("train: [1, 2]\n")
    with pytest.raises(TunewiseError, match="by hand"):
        set_yaml_value(path, "train", "lr", 0.1)
    assert path.read_text() == "train: [1, 2]\n"  # untouched


# ---------------------------------------------------------------------------------------------- real ramps


def test_range_test_on_a_micro_model_that_diverges(micro_llama_dir, tmp_path):
    from tests.test_train import cfg_for, make_data
    from tunewise.train.find_lr import range_test, write_result

    data = make_data(tmp_path, n=64)
    cfg = cfg_for(micro_llama_dir, data, "full", batch_size=8)
    result = range_test(cfg, steps=40, lr_min=1e-4, lr_max=30.0)
    s = result.suggestion
    assert s is not None, result.error
    assert s.diverged_at is not None, "a ramp to lr 30 must diverge"
    assert len(result.losses) == s.diverged_at + 1  # stopped at divergence, not at the end of the ramp
    assert s.lr < s.min_loss_lr < s.diverged_lr
    assert s.lr < result.lrs[s.diverged_at]
    assert s.lr == pytest.approx(s.min_loss_lr / 10)  # full fine-tuning: fastai's minimum / 10
    js, png = write_result(result, tmp_path / "out")
    assert json.loads(js.read_text())["suggested_lr"] == pytest.approx(s.lr)
    assert png.stat().st_size > 1000


def test_a_lora_ramp_divides_its_minimum_by_two(micro_llama_dir, tmp_path):
    from tests.test_train import cfg_for, make_data
    from tunewise.train.find_lr import range_test
    from tunewise.train.lr_finder import divisor_for

    assert (divisor_for("lora"), divisor_for("qlora"), divisor_for("full")) == (2.0, 2.0, 10.0)
    cfg = cfg_for(micro_llama_dir, make_data(tmp_path, n=64), "lora", batch_size=8)
    s = range_test(cfg, steps=30, lr_min=1e-4, lr_max=30.0).suggestion
    assert s is not None and s.divisor == 2.0
    assert s.lr == pytest.approx(s.min_loss_lr / 2)


def test_cli_find_lr_writes_only_the_result_and_edits_the_config(tiny_base_dir, tmp_path):
    from tests.test_train import make_data
    from tunewise.cli import app

    data = make_data(tmp_path, n=64)
    config = tmp_path / "run.yaml"
    original = (f"# a user's config\nbase: tiny\nmethod: lora\ndata:\n  train: {data}\n  max_seq_len: 48\n"
                "train:\n  batch_size: 8   # small\n  lr: 0.1\nlora: {r: 4}\n")
    config.write_text(original)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(config), "--find-lr", "--write", "--find-lr-steps", "24",
                                   "--lr-min", "1e-5", "--lr-max", "1.0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "suggested lr" in res.output
    written = sorted(p.name for p in out.iterdir())
    assert written == [".tunewise", "find_lr.json", "find_lr.png"]  # no config.yaml, metrics, checkpoints
    found = json.loads((out / "find_lr.json").read_text())
    lr = float(f"{found['suggested_lr']:.3g}")
    text = config.read_text()
    assert text == original.replace("lr: 0.1", f"lr: {yaml.safe_dump(lr).splitlines()[0]}")
    assert "# small" in text and text.startswith("# a user's config")
    # the folder is a run's: training into it afterwards is allowed
    from tunewise.ownership import claim_dir

    claim_dir(out, "run")


def test_cli_write_without_find_lr_is_refused(tmp_path):
    from tunewise.cli import app

    config = tmp_path / "run.yaml"
    config.write_text("data: {train: x.jsonl}\n")
    res = CliRunner().invoke(app, ["train", str(config), "--write"])
    assert res.exit_code != 0 and "--write needs --find-lr" in str(res.exception)
    assert config.read_text() == "data: {train: x.jsonl}\n"


def test_default_lr_says_which_evidence_it_rests_on():
    from tunewise.advise.engine import AdviseInput, advise
    from tunewise.defaults import default_lr, lr_source

    assert "tiny base" in lr_source(5_000_000) and "smollm2" in lr_source(134_515_008)
    assert "seed's 7B" in lr_source(7_000_000_000)
    assert "[evidence: the seed's 7B" in default_lr("lora", 7_000_000_000)[1]  # compare's lr notes show this
    hp = advise(AdviseInput(task="structured", model="tiny", device="cpu", gpu_mem=8)).hyperparameters
    assert hp["lr"]["value"] == 5e-3 and hp["lr"]["source"] == lr_source(5_000_000)


def test_a_time_limit_cuts_the_ramp_and_withholds_a_half_curve_suggestion(micro_llama_dir, tmp_path):
    from tests.test_train import cfg_for, make_data
    from tunewise.train.find_lr import range_test

    cfg = cfg_for(micro_llama_dir, make_data(tmp_path, n=32), "lora", batch_size=8)
    result = range_test(cfg, steps=40, lr_min=1e-6, lr_max=1e-3, max_seconds=0.0)
    assert len(result.losses) == 3  # the minimum the cut allows
    assert result.suggestion is None and "time limit" in result.error


def test_cli_find_lr_with_resume_is_refused(tmp_path):
    from tunewise.cli import app

    config = tmp_path / "run.yaml"
    config.write_text("data: {train: x.jsonl}\n")
    res = CliRunner().invoke(app, ["train", str(config), "--find-lr", "--resume", str(tmp_path)])
    assert res.exit_code != 0 and "--resume" in str(res.exception)


def test_a_ramp_that_cannot_reach_its_minimum_in_time_stops_early(monkeypatch):
    """At 10 s per step, 40 steps and a 200 s limit, step 3 already shows that step 32 (80%) comes too late."""
    from tunewise.train import find_lr

    monkeypatch.setattr(find_lr.time, "time", lambda: 130.0)  # setup 100 s, then 3 steps of 10 s
    assert find_lr._cannot_reach_minimum(0.0, 100.0, 3, 40, 200.0)  # 130 + 29 x 10 > 200
    assert not find_lr._cannot_reach_minimum(0.0, 100.0, 3, 40, 500.0)  # 130 + 290 <= 500
