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
