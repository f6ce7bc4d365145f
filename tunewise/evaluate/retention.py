"""Retention (forgetting): run probes on a model, and compare a base with its fine-tuned version.

The trainer calls `run_probes` before and after training and `retention_change` on the two results;
`tunewise eval RUN --preserve arithmetic,lm` does the same for a finished run.
"""

from __future__ import annotations

from typing import Any

from tunewise.errors import TunewiseError
from tunewise.evaluate.base_probes import load_probe
from tunewise.evaluate.generation import greedy_generate
from tunewise.evaluate.loglik import mean_token_loss
from tunewise.tasks.probes import Probe, parse_probe_list
from tunewise.tasks.scorers import make_scorer


def _is_causal_lm(model) -> bool:
    # A PEFT wrapper exposes the wrapped model's generate(); encoders with a classification head do not.
    return callable(getattr(model, "generate", None)) and getattr(model, "can_generate", lambda: True)()


def run_probe(model, tokenizer, probe: Probe, batch_size: int = 16) -> dict[str, Any]:
    if probe.kind == "loss":
        score = mean_token_loss(model, tokenizer, probe.texts, batch_size=max(1, batch_size // 2))
    elif probe.kind == "kl":
        from tunewise.evaluate.base_probes import kl_score

        score = kl_score(model, probe.kl_reference)
    else:
        outs = greedy_generate(model, tokenizer, probe.prompts, max_new_tokens=probe.max_new_tokens,
                               stop=probe.stop, batch_size=batch_size)
        scorer = make_scorer(probe.scorer)
        scored = [scorer.score(o, r) for o, r in zip(outs, probe.references, strict=True)]
        score = sum(s.correct for s in scored) / len(scored) if scored else 0.0
    n = {"loss": len(probe.texts), "kl": len(probe.kl_reference.ids) if probe.kl_reference else 0}
    return {"metric": probe.metric, "score": float(score), "higher_is_better": probe.higher_is_better,
            "n": n.get(probe.kind, len(probe.prompts)), "abs_tolerance": probe.abs_tolerance}


def run_probes(model, tokenizer, probes: list[str] | str, limit: int = 64, batch_size: int = 16,
               base: str | None = None, is_base: bool = False) -> dict[str, dict[str, Any]]:
    """{probe name: {"metric", "score", "higher_is_better", "n"}} for each probe ('arithmetic', 'lm', 'knowledge',
    'kl', a JSONL path). `base` names the base the model was tuned from (or is, with is_base): the knowledge and
    kl probes are built for it.

    Probes need a causal LM (they generate or score text); a classification model gets a clear error.
    """
    names = parse_probe_list(probes)
    if names and not _is_causal_lm(model):
        raise TunewiseError("retention probes need a causal language model (they generate and score text)",
                            "drop --preserve / preserve.probes for sequence-classification runs")
    was_training = model.training
    try:
        built_from = (model, tokenizer) if is_base else (None, None)
        return {name: run_probe(model, tokenizer, load_probe(name, limit, base, *built_from), batch_size)
                for name in names}
    finally:
        model.train(was_training)


def retention_change(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
                     max_drop: float = 0.0) -> dict[str, dict[str, Any]]:
    """Per probe in both: before, after, abs_change (after - before), rel_change (abs / |before|), and
    `dropped`: the skill got worse by more than `max_drop` (relative; 0 = any worsening).

    `worse_by` is the relative change signed so that positive always means worse (a loss going up, an
    accuracy going down), which is what a threshold on forgetting compares against. From a zero baseline the
    relative change is undefined (None) and any worsening counts as dropped.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, b in before.items():
        if name not in after:
            continue
        x, y = float(b["score"]), float(after[name]["score"])
        higher = bool(b.get("higher_is_better", True))
        abs_change = y - x
        worse_abs = -abs_change if higher else abs_change
        # Relative to a zero baseline is undefined: rel_change is None, and any worsening counts as a drop. A
        # probe measured from zero by nature (kl: drift in nats) carries its own absolute tolerance instead.
        rel = abs_change / abs(x) if x != 0 else (0.0 if abs_change == 0 else None)
        worse_by = None if rel is None else (-rel if higher else rel)
        tolerance = float(b.get("abs_tolerance") or 0.0)
        if tolerance:
            dropped = worse_abs > tolerance
        else:
            dropped = worse_abs > 0 if worse_by is None else worse_by > max_drop
        out[name] = {"metric": b.get("metric"), "higher_is_better": higher, "before": x, "after": y,
                     "abs_change": abs_change, "rel_change": rel, "worse_by": worse_by, "dropped": dropped}
    return out
