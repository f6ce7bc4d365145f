"""The learning-curve fit of `advise --pilot` on synthetic curves with a known answer, and the pilot's verdict."""

from __future__ import annotations

import pytest

from tunewise.advise.curves import binomial_sigma, fit_curve


def truth(n, a=0.9, b=2.0, c=0.5):
    return a - b * n ** -c


def test_exact_points_of_a_power_law_extrapolate_to_the_truth():
    ns = [40, 80, 160]
    fit = fit_curve(ns, [truth(n) for n in ns], [0.01] * 3)
    assert fit.kind == "power"
    assert fit.c == pytest.approx(0.5, rel=0.05)
    assert fit.predict(1000) == pytest.approx(truth(1000), abs=0.01)
    lo, hi = fit.interval(1000)
    assert lo <= truth(1000) <= hi


def test_noisy_points_give_a_band_that_holds_the_truth_and_widens_with_noise():
    ns = [40, 80, 160]
    noise = [0.02, -0.02, 0.015]
    narrow = fit_curve(ns, [truth(n) + e / 4 for n, e in zip(ns, noise)], [0.005] * 3)
    wide = fit_curve(ns, [truth(n) + e for n, e in zip(ns, noise)], [0.02] * 3)
    for fit in (narrow, wide):
        lo, hi = fit.interval(1000)
        assert lo <= truth(1000) <= hi, (lo, truth(1000), hi)
    assert (wide.interval(1000)[1] - wide.interval(1000)[0]) > (narrow.interval(1000)[1] - narrow.interval(1000)[0])


def test_flat_and_falling_scores_predict_no_gain():
    flat = fit_curve([20, 40, 80], [0.0, 0.0, 0.0], [binomial_sigma(0, 40)] * 3)
    assert flat.predict(1000) == pytest.approx(0.0, abs=1e-9)
    assert flat.interval(1000)[0] == 0.0 and flat.interval(1000)[1] < 0.2
    falling = fit_curve([20, 40, 80], [0.5, 0.4, 0.3], [0.02] * 3)
    assert falling.kind == "constant" and falling.predict(1000) == pytest.approx(0.4, abs=0.01)


def test_predictions_stay_inside_the_score_bounds():
    fit = fit_curve([10, 20, 40], [0.5, 0.8, 0.95], [0.01] * 3)
    lo, hi = fit.interval(10_000)
    assert 0.0 <= lo <= fit.predict(10_000) <= hi <= 1.0


def test_binomial_sigma_is_never_zero():
    assert binomial_sigma(0.0, 40) > 0 and binomial_sigma(1.0, 40) > 0
    assert binomial_sigma(0.5, 400) < binomial_sigma(0.5, 40)


# ---------------------------------------------------------------------------------------------- the verdict

from tunewise.advise.pilot_verdict import Prediction, decide  # noqa: E402


def P(method, score, half, mem=10.0, fits=True, best=None):
    return Prediction(method, score, score - half, score + half, best if best is not None else score, mem, fits)


def test_a_clear_measured_gap_beats_the_rule_table_and_says_so():
    v = decide({"lora": P("lora", 0.60, 0.02, mem=3), "full": P("full", 0.80, 0.02)}, "lora",
               ["representation task"], base_score=0.1)
    assert v.recommendation == "full" and v.evidence == "measured" and v.contradicts_rules
    assert "contradicts the rule table" in " ".join(v.lines)


def test_lora_within_the_tie_margin_wins_against_a_rule_for_full():
    v = decide({"lora": P("lora", 0.795, 0.004, mem=3), "full": P("full", 0.80, 0.004)}, "full", ["reasoning"],
               base_score=0.1)
    assert v.recommendation == "lora" and v.evidence == "measured" and v.contradicts_rules
    assert "30% of the memory" in v.lines[0]


def test_overlapping_bands_leave_the_call_to_the_rules():
    v = decide({"lora": P("lora", 0.70, 0.10), "full": P("full", 0.75, 0.10)}, "lora", [], base_score=0.1)
    assert v.recommendation == "lora" and v.evidence == "rule" and not v.contradicts_rules
    assert "cannot separate" in v.lines[0]


def test_nothing_learned_means_the_measurement_says_nothing():
    v = decide({"lora": P("lora", 0.0, 0.0), "full": P("full", 0.0, 0.0)}, "full", [], base_score=0.0)
    assert v.recommendation == "full" and v.evidence == "rule"


def test_memory_comes_first():
    v = decide({"lora": P("lora", 0.5, 0.01), "full": P("full", 0.9, 0.01, mem=80, fits=False)}, "full", [],
               base_score=0.0)
    assert v.recommendation == "lora" and v.evidence == "memory"


def test_nothing_measured_inside_the_budget_falls_back_to_the_rules():
    v = decide({}, "lora", ["representation task"])
    assert v.recommendation == "lora" and v.evidence == "rule" and "Nothing was measured" in v.lines[0]


def test_one_measured_method_compares_nothing():
    v = decide({"lora": P("lora", 0.5, 0.01)}, "full", [], base_score=0.0)
    assert v.recommendation == "full" and v.evidence == "rule" and "nothing to compare" in v.lines[0]


# ---------------------------------------------------------------------------------------------- paired resolution

from tunewise.advise.resolution import paired_gap  # noqa: E402


def test_paired_gap_counts_only_the_examples_the_methods_differ_on():
    # 40 examples: both right on 20, both wrong on 10, full alone right on 6, LoRA alone right on 4
    full = [1.0] * 20 + [0.0] * 10 + [1.0] * 6 + [0.0] * 4
    lora = [1.0] * 20 + [0.0] * 10 + [0.0] * 6 + [1.0] * 4
    g = paired_gap(full, lora, n_train=240)
    assert g.gap == pytest.approx(2 / 40) and g.discordant == pytest.approx(10 / 40)
    low, high = g.interval()
    assert low < 0 < high  # a 2-example lead on 40 is no lead
    # the same discordance on 10x the examples narrows the band by about sqrt(10)
    big = paired_gap(full * 10, lora * 10, n_train=240)
    assert g.half_width / 10**0.5 * 0.8 < big.half_width < g.half_width / 10**0.5 * 1.1
    assert g.examples_needed(g.half_width) == pytest.approx(40, abs=2)


def test_paired_gap_of_identical_answers_keeps_a_floor():
    g = paired_gap([1.0, 0.0] * 20, [1.0, 0.0] * 20, n_train=100)
    assert g.gap == 0 and g.discordant == 0 and g.half_width >= 3 / 40  # the rule of three


def test_paired_gap_takes_the_metrics_own_pairs():
    # slot F1 over all examples (2tp / (2tp + fp + fn) summed), not the mean of per-example F1s
    full = [(4.0, 4.0), (0.0, 6.0)] * 20
    lora = [(2.0, 4.0), (0.0, 6.0)] * 20
    g = paired_gap(full, lora, n_train=240)
    assert g.gap == pytest.approx(4 / 10 - 2 / 10)


def test_at_the_full_data_the_paired_band_decides_and_says_what_a_sharper_call_needs():
    wide = {"lora": P("lora", 0.30, 0.20, mem=3), "full": P("full", 0.60, 0.20)}  # curve bands overlap
    full = [1.0] * 12 + [1.0] * 12 + [0.0] * 16
    lora = [1.0] * 12 + [0.0] * 12 + [0.0] * 16  # full alone right on 12 of 40: a 30-point lead
    v = decide(wide, "lora", [], base_score=0.0, paired=paired_gap(full, lora, 240), n_full=240)
    assert v.recommendation == "full" and v.evidence == "measured" and v.contradicts_rules
    assert "same 40" in v.lines[0] and v.lines[1].startswith("Resolution:")
    # the same pair at a smaller slice is extrapolated by the curves: their bands overlap, the rules decide
    v = decide(wide, "lora", [], base_score=0.0, paired=paired_gap(full, lora, 120), n_full=240)
    assert v.evidence == "rule" and "cannot separate" in v.lines[0]
    assert "validation examples" in v.lines[1]


def test_a_paired_tie_on_40_examples_is_not_a_measured_tie():
    same = [1.0] * 18 + [0.0] * 22
    flip = [1.0] * 16 + [0.0] * 2 + [1.0] * 2 + [0.0] * 20  # differ on 4 of 40, no net gap
    tight = {"lora": P("lora", 0.45, 0.15, mem=3), "full": P("full", 0.45, 0.15)}
    v = decide(tight, "full", ["reasoning"], base_score=0.1, paired=paired_gap(same, flip, 240), n_full=240)
    assert v.evidence == "rule" and v.recommendation == "full" and "the measured gap is +0.0 points" in v.lines[0]
    resolution = next(line for line in v.lines if line.startswith("Resolution:"))
    assert "differed on 10%" in resolution and "+-5 points would need about" in resolution
