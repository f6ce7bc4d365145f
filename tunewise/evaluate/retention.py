"""Retention (forgetting): run probes on a model, and compare a base with its fine-tuned version.

The trainer calls `run_probes` before and after training and `retention_change` on the two results;
`tunewise eval RUN --preserve arithmetic,lm` does the same for a finished run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.evaluate.base_probes import kl_score, load_probe, ranked_first
from tunewise.evaluate.generation import GENERATE_ROWS, greedy_generate
from tunewise.evaluate.loglik import mean_token_loss
from tunewise.fileio import atomic_write_json, cache_root, sha256_file
from tunewise.models import base_fingerprint
from tunewise.progress import progress_bar
from tunewise.results import RetentionChange
from tunewise.tasks.probes import Probe, parse_probe_list
from tunewise.tasks.scorers import make_scorer


def _is_causal_lm(model) -> bool:
    # A PEFT wrapper exposes the wrapped model's generate(); encoders with a classification head do not.
    return callable(getattr(model, "generate", None)) and getattr(model, "can_generate", lambda: True)()


def run_probe(model, tokenizer, probe: Probe, batch_size: int = GENERATE_ROWS) -> dict[str, Any]:
    if probe.kind == "loss":
        # a loss batch holds every position's logits (rows x length x vocabulary): at most 8 rows
        score = mean_token_loss(model, tokenizer, probe.texts, batch_size=max(1, min(8, batch_size // 2)))
    elif probe.kind == "kl":
        score = kl_score(model, probe.kl_reference)
    elif probe.kind == "choice":
        right = ranked_first(model, tokenizer, probe.prompts, probe.choices)
        score = sum(right) / len(right) if right else 0.0
    else:
        outs = greedy_generate(model, tokenizer, probe.prompts, max_new_tokens=probe.max_new_tokens,
                               stop=probe.stop, batch_size=batch_size, progress=f"probe {probe.metric}")
        scorer = make_scorer(probe.scorer)
        scored = [scorer.score(o, r) for o, r in zip(outs, probe.references, strict=True)]
        score = sum(s.correct for s in scored) / len(scored) if scored else 0.0
    n = {"loss": len(probe.texts), "kl": len(probe.kl_reference.ids) if probe.kl_reference else 0}
    return {"metric": probe.metric, "score": float(score), "higher_is_better": probe.higher_is_better,
            "n": n.get(probe.kind, len(probe.prompts)), "abs_tolerance": probe.abs_tolerance}


def run_probes(model, tokenizer, probes: list[str] | str, limit: int = 64, batch_size: int = GENERATE_ROWS,
               base: str | None = None, is_base: bool = False) -> dict[str, dict[str, Any]]:
    """{probe name: {"metric", "score", "higher_is_better", "n"}} for each probe ('arithmetic', 'lm', 'knowledge',
    'follows', 'kl', a JSONL path). `base` names the base the model was tuned from (or is, with is_base): the
    knowledge, follows and kl probes are built for it.

    Probes need a causal LM (they generate or score text); a classification model gets a clear error.
    """
    names = parse_probe_list(probes)
    if names and not _is_causal_lm(model):
        raise TunewiseError("retention probes need a causal language model (they generate and score text)",
                            "drop --preserve / preserve.probes for sequence-classification runs")
    was_training = model.training
    try:
        built_from = (model, tokenizer) if is_base else (None, None)
        scores = {}
        bar = progress_bar(len(names), "retention probes", "probe")
        try:
            for name in names:
                bar.set_postfix_str(name, refresh=False)
                scores[name] = _probe_score(model, tokenizer, name, limit, batch_size, base, is_base, built_from)
                bar.update(1)
        finally:
            bar.close()
        return scores
    finally:
        model.train(was_training)


def _probe_score(model, tokenizer, name: str, limit: int, batch_size: int, base: str | None, is_base: bool,
                 built_from: tuple) -> dict[str, Any]:
    """One probe's score; the base's is cached on disk (it does not change between runs)."""
    cache = _base_score_cache(model, name, limit, batch_size, base) if is_base and base else None
    if cache is not None and cache.is_file():
        return json.loads(cache.read_text())
    score = run_probe(model, tokenizer, load_probe(name, limit, base, *built_from), batch_size)
    if cache is not None:
        atomic_write_json(cache, score)
    return score


# Bump when a probe or scorer changes what it measures (2: generation through the engine, knowledge by loglik).
BASE_SCORE_CACHE_VERSION = 2


def _base_score_cache(model, name: str, limit: int, batch_size: int, base: str) -> Path | None:
    """Where a base's own score on a probe is kept: the same base files, probe, limit, batch size and dtype give
    the same score, so every run from that base (a compare's three methods, a study's dozens) measures it once."""
    try:
        fingerprint = base_fingerprint(base)
    except TunewiseError:
        return None
    probe = sha256_file(name) if Path(name).is_file() else name  # a user's JSONL probe: by content
    dtype = str(next(model.parameters()).dtype)
    key = f"{BASE_SCORE_CACHE_VERSION}:{fingerprint}:{probe}:{limit}:{batch_size}:{dtype}"
    return cache_root() / "retention" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def retention_change(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
                     max_drop: float = 0.0) -> dict[str, RetentionChange]:
    """Per probe in both, what changed and whether it `dropped` (worse by more than `max_drop`, relative; 0 = any
    worsening): see tunewise.results.RetentionChange, the one place that decides it."""
    return {name: RetentionChange.measure(b, after[name], max_drop) for name, b in before.items() if name in after}
