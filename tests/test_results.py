"""Typed results (issue 21): eps as floats inside Python, the same JSON as before at the edge."""

from __future__ import annotations

import json

from tunewise.analysis.result import AnalysisResult, MatrixIntruders


def _spectrum(rank, fro):
    return {"effective_rank_90": rank, "rank": rank, "fro_rel": fro, "spectral_rel": fro / 2}


def _result(spectrum=True) -> AnalysisResult:
    rows = [MatrixIntruders("l0.q", 0, "q_proj", [4, 4], [0.1, 0.9], {0.3: 1, 0.5: 1},
                            _spectrum(2, 0.25) if spectrum else None),
            MatrixIntruders("l0.v", 0, "v_proj", [4, 4], [0.4, 0.9], {0.3: 0, 0.5: 1},
                            _spectrum(1, 0.5) if spectrum else None),
            MatrixIntruders("l1.q", 1, "q_proj", [4, 4], [0.9, 0.9], {0.3: 0, 0.5: 0},
                            _spectrum(3, 0.75) if spectrum else None),
            MatrixIntruders("head", None, "lm_head", [8, 4], [0.2, 0.2], {0.3: 2, 0.5: 2},
                            _spectrum(1, 0.5) if spectrum else None)]
    return AnalysisResult("tiny", "run", "/abs/run/adapter", "lora", 2, [0.3, 0.5], rows, ["x.bias"],
                          {"dir": None, "hits": 0, "misses": 4}, 1.5)


def test_analysis_totals_are_keyed_by_eps_as_a_float():
    r = _result()
    assert r.total == {0.3: 3, 0.5: 4} and r.matrices_with_intruders == {0.3: 2, 0.5: 3}
    assert {g: v.intruders[0.5] for g, v in r.per_layer.items()} == {"0": 2, "1": 0, "none": 2}
    assert {g: v.matrices for g, v in r.per_module.items()} == {"q_proj": 2, "v_proj": 1, "lm_head": 1}


def test_analysis_json_has_the_shape_analysis_json_always_had():
    d = json.loads(json.dumps(_result().as_dict()))
    assert list(d) == ["base", "tuned", "tuned_path", "kind", "k", "eps", "summary", "matrices", "skipped", "cache",
                       "seconds"]
    assert d["summary"] == {
        "total": {"0.3": 3, "0.5": 4}, "matrices": 4, "matrices_with_intruders": {"0.3": 2, "0.5": 3},
        "per_layer": {"0": {"matrices": 2, "0.3": 1, "0.5": 2}, "1": {"matrices": 1, "0.3": 0, "0.5": 0},
                      "none": {"matrices": 1, "0.3": 2, "0.5": 2}},
        "per_module": {"q_proj": {"matrices": 2, "0.3": 1, "0.5": 1}, "v_proj": {"matrices": 1, "0.3": 0, "0.5": 1},
                       "lm_head": {"matrices": 1, "0.3": 2, "0.5": 2}},
        "spectrum": {"effective_rank_90_median": 2, "effective_rank_90_max": 3, "fro_rel_mean": 0.5,
                     "spectral_rel_mean": 0.25}}
    assert d["matrices"][0] == {"name": "l0.q", "layer": 0, "module": "q_proj", "shape": [4, 4],
                                "similarities": [0.1, 0.9], "intruders": {"0.3": 1, "0.5": 1},
                                "spectrum": _spectrum(2, 0.25)}
    assert "spectrum" not in _result(spectrum=False).as_dict()["summary"]
    assert "spectrum" not in _result(spectrum=False).as_dict()["matrices"][0]


def test_compare_slim_analysis_at_one_eps():
    assert _result(spectrum=False).slim(0.5) == {"total": 4, "per_layer": {"0": 2, "1": 0, "none": 2},
                                                 "per_module": {"q_proj": 1, "v_proj": 1, "lm_head": 2},
                                                 "spectrum": None, "seconds": 1.5}


def _summary_fields() -> dict:
    return {"method": "lora", "base": "tiny", "base_fingerprint": "abc", "status": "completed",
            "trainable_params": 10, "total_params": 100, "steps": 4, "planned_steps": 4, "epochs": 1.333,
            "lr": 0.005, "wall_time_s": 2.5, "train_time_s": 1.25, "tokens": 400, "tokens_per_s": 320.0,
            "peak_rss_mb": 512.5, "peak_cuda_mb": None, "final_train_loss": 1.5, "final_eval_loss": None,
            "eval_losses": [], "train_eval_gap": None, "guard_events": [], "overfit_marked": False,
            "examples": {"used": 8}, "output": "runs/x/adapter", "world_size": 1}


def test_train_summary_writes_only_the_fields_a_run_has_in_the_old_order():
    from tunewise.results import TrainSummary

    s = TrainSummary(**_summary_fields())
    s.distributed, s.peak_rss_mb_per_rank = None, [512.5]
    assert list(s.as_dict()) == [*_summary_fields(), "distributed", "peak_rss_mb_per_rank"]
    s.best_step, s.best_eval_loss = None, None  # keep_best before any eval: written, as null
    s.retention, s.retention_dropped, s.retention_failed = {}, [], False
    s.ddp_ranks_identical = True
    keys = list(s.as_dict())
    assert keys[len(_summary_fields()):] == ["best_step", "best_eval_loss", "retention", "retention_dropped",
                                             "retention_failed", "ddp_ranks_identical", "distributed",
                                             "peak_rss_mb_per_rank"]
    again = TrainSummary.from_dict(json.loads(json.dumps(s.as_dict() | {"later_key": 1})))
    assert again.as_dict() == s.as_dict() | {"later_key": 1}  # a newer version's key survives a round trip
