"""The decision module: the band's coverage, measured by simulation (a test that fails if the band is too narrow
or too wide), and the five calls with their words."""

from __future__ import annotations

import numpy as np
import pytest

from tunewise.decide import Scores, make_call, measure_gap, scores_from_records
from tunewise.decide.band import item_pair
from tunewise.decide.vocabulary import BUILTIN_ADVISE_TASK, kind_of

DRAWS = 1000  # simulated experiments per setting: coverage is then known to about +-0.7 points


def paired_right_wrong(rng, n: int, acc_a: float, acc_b: float, discordant: float) -> tuple[Scores, Scores]:
    """Both methods answer the same n examples; on `discordant` of them exactly one is right."""
    only_a = (discordant + acc_a - acc_b) / 2
    only_b = discordant - only_a
    both = acc_a - only_a
    u = rng.random(n)
    a = (u < both + only_a).astype(float)
    b = ((u < both) | ((u >= both + only_a) & (u < both + only_a + only_b))).astype(float)
    ones = np.ones((1, n))
    return Scores(a[None], ones), Scores(b[None], ones)


def paired_slot_counts(rng, n: int, recall_a: float, recall_b: float) -> tuple[Scores, Scores]:
    """Slot-F1-like scores: 2-5 slots per example, a difficulty shared by both methods, some false positives."""
    slots = rng.integers(2, 6, n)
    difficulty = rng.random(n) - 0.5

    def run(recall: float) -> Scores:
        tp = rng.binomial(slots, np.clip(recall + 0.3 * difficulty, 0, 1))
        fp = rng.binomial(2, 0.15, n)
        return Scores((2.0 * tp)[None], (2.0 * tp + fp + slots - tp)[None])

    return run(recall_a), run(recall_b)


def coverage(make, n: int) -> float:
    rng = np.random.default_rng(n)
    hits = 0
    for i in range(DRAWS):
        band = measure_gap(*make(rng, n), seed=i)
        hits += band.low <= 0 <= band.high
    return hits / DRAWS


@pytest.mark.parametrize("n", [40, 400])
def test_band_covers_a_zero_gap_95_percent_of_the_time_for_right_wrong_scores(n):
    assert 0.93 <= coverage(lambda rng, n: paired_right_wrong(rng, n, 0.6, 0.6, 0.25), n) <= 0.97


@pytest.mark.parametrize("n", [40, 400])
def test_band_covers_a_zero_gap_95_percent_of_the_time_for_slot_f1(n):
    assert 0.93 <= coverage(lambda rng, n: paired_slot_counts(rng, n, 0.5, 0.5), n) <= 0.97


def test_a_true_20_point_gap_at_400_examples_is_called_for_the_right_method():
    rng = np.random.default_rng(7)
    calls = [make_call(measure_gap(*paired_right_wrong(rng, 400, 0.5, 0.7, 0.35), seed=i)).call
             for i in range(DRAWS)]
    assert calls.count("full") / DRAWS >= 0.95
    rng = np.random.default_rng(8)
    calls = [make_call(measure_gap(*paired_right_wrong(rng, 400, 0.7, 0.5, 0.35), seed=i)).call
             for i in range(DRAWS)]
    assert calls.count("lora") / DRAWS >= 0.95


def test_a_gap_inside_its_band_is_undecided_and_says_what_would_decide_it():
    rng = np.random.default_rng(0)
    lora, full = paired_right_wrong(rng, 40, 0.55, 0.6, 0.3)
    call = make_call(measure_gap(lora, full), kind="reasoning")
    assert call.call == "undecided" and call.recommendation == "lora"
    low, high = call.band_points
    assert low < call.gap_points < high and high - low > 10  # 40 examples: a band of more than +-5 points
    assert call.needed_examples > 40 and call.seeds == 1
    assert f"on 40 examples, 1 seed: undecided; a +-5-point call needs about {call.needed_examples} examples" \
        in call.sentence
    assert call.sentence.endswith("meanwhile keep LoRA (cheaper)")


def test_a_band_inside_the_margin_is_a_tie_and_a_clear_gap_a_decision():
    n = 4000
    same = Scores(np.tile([1.0, 0.0], n // 2)[None], np.ones((1, n)))
    assert make_call(measure_gap(same, same)).call == "tie"
    better = Scores(np.tile([1.0, 1.0, 1.0, 0.0], n // 4)[None], np.ones((1, n)))
    call = make_call(measure_gap(same, better), kind="reasoning")
    assert (call.call, call.recommendation) == ("full", "full") and "graduate" in call.sentence
    call = make_call(measure_gap(better, same, seed=1), kind="representation")
    assert (call.call, call.recommendation) == ("lora", "lora")


def test_seed_spread_widens_the_band_and_asks_for_seeds():
    n = 400
    rng = np.random.default_rng(3)
    one = (rng.random((1, n)) < 0.6).astype(float)
    steady = Scores(np.repeat(one, 3, axis=0), np.ones((3, n)))
    # a method whose seeds land 30 points apart: examples alone cannot narrow that
    shaky = Scores(np.stack([(rng.random(n) < p).astype(float) for p in (0.45, 0.75, 0.6)]), np.ones((3, n)))
    band = measure_gap(steady, shaky)
    assert band.half_width_seeds > 0.05 and band.half_width > band.half_width_examples
    call = make_call(band)
    assert call.call == "undecided" and call.needed_seeds > 3 and call.seeds == 3


def test_records_become_the_metrics_own_pairs():
    recs = [{"correct": False, "counts": {"tp": 1, "fp": 1, "fn": 0}}, {"correct": True, "counts": {"tp": 2, "fp": 0,
                                                                                                  "fn": 0}}]
    s = scores_from_records([recs], primary="slot_f1")
    assert s.metric() == pytest.approx(2 * 3 / (2 * 3 + 1))  # micro F1 over all slots, not the mean of F1s
    assert item_pair(recs[0], "accuracy") == (0.0, 1.0)
    with pytest.raises(ValueError):
        scores_from_records([recs, recs[:1]])


def test_one_task_vocabulary():
    assert kind_of("math-hard") == "reasoning" and kind_of("classify") == "representation"
    assert kind_of("sql") == "sql" and kind_of("my-own-data") == "other"
    assert set(BUILTIN_ADVISE_TASK) >= {"structured", "classify", "sql", "math", "math-hard"}

    from tunewise.advise.rules import TASKS
    from tunewise.decide.vocabulary import ADVISE_TASK_KIND

    assert set(TASKS) == set(ADVISE_TASK_KIND)  # every task advise knows has its kind here


def replicated_right_wrong(rng, k: int, n: int, seed_spread: float) -> tuple[list[Scores], list[Scores]]:
    """k seeds, each with its own n test examples (the study's design): the true gap is 0 on average and each
    seed moves it by N(0, seed_spread)."""
    pairs = []
    for _ in range(k):
        d = rng.normal(0.0, seed_spread)
        pairs.append(paired_right_wrong(rng, n, 0.6 - d / 2, 0.6 + d / 2, 0.3))
    return [a for a, _ in pairs], [b for _, b in pairs]


@pytest.mark.parametrize("seed_spread", [0.0, 0.03])
def test_replicated_band_covers_a_zero_gap_95_percent_of_the_time(seed_spread):
    """3 seeds x 200 examples each: the seeds' spread of the gap from none up to about the test sets' own sampling
    spread (3.8 points here); beyond it 3 seeds estimate it poorly (about 89% at 1.5-3x, the module says so)."""
    from tunewise.decide import measure_replicated_gap

    rng = np.random.default_rng(11)
    sims, hits = 500, 0
    for i in range(sims):
        band = measure_replicated_gap(*replicated_right_wrong(rng, 3, 200, seed_spread), draws=200, seed=i)
        hits += band.low <= 0 <= band.high
    # a little wide at no spread (97.8% here): a chance excess of the seeds' gaps is taken at t(2) = 4.3
    assert 0.93 <= hits / sims <= 0.98


def test_replicates_pool_their_examples_carry_their_seeds_and_one_replicate_is_measure_gap():
    from tunewise.decide import measure_replicated_gap

    rng = np.random.default_rng(5)
    lora, full = replicated_right_wrong(rng, 1, 200, 0.0)
    assert measure_replicated_gap(lora, full, seed=3) == measure_gap(lora[0], full[0], seed=3)
    # three seeds whose gaps land 30 points apart, on 200 examples each: the spread is the seeds', not the examples'
    gaps = [paired_right_wrong(rng, 200, 0.6, 0.6 + g, 0.4) for g in (-0.15, 0.0, 0.15)]
    band = measure_replicated_gap([a for a, _ in gaps], [b for _, b in gaps])
    assert band.examples == 600 and band.seeds == (3, 3) and band.half_width_seeds > band.half_width_examples
    call = make_call(band)
    assert call.call == "undecided" and call.needed_seeds > 3 and "on 600 examples, 3 seeds" in call.sentence
    # seeds needed: t's quantile narrows as seeds are added (4.3 at 3 seeds, 2.0 at 30), so fewer than 1/sqrt(k)
    # scaling of the 3-seed band says
    scaled = 3 * (band.half_width_seeds / (call.resolution_points / 100 / np.sqrt(2))) ** 2
    assert call.needed_seeds < scaled / 3
    with pytest.raises(ValueError):
        measure_replicated_gap(lora, full + full)
