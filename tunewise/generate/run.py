"""The engine in the caller's thread: a list of jobs to their results (eval, probes, benchmarks), and one prompt
streamed token by token (a chat). The server's worker thread drives the same RunningBatch (serve/batching.py).

Admission is ordered by prompt length, so rows that prefill together have similar lengths (little padding), and a
slot that a finished row frees is refilled at the next step.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterator

import torch

from tunewise.generate.batch import AdapterRouter, RunningBatch
from tunewise.generate.rowlora import RowLoRA
from tunewise.generate.rows import Delta, GenJob, GenResult, common_prefix
from tunewise.generate.sampling import SamplingParams

# One RowLoRA per model: it patches the model's LoRA layers once, and later calls reuse the patch.
_ROWLORA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
MIN_SHARED_PREFIX = 16  # tokens: a shorter shared start is not worth a forward of its own


def _forward_for(model, jobs: list[GenJob], stats: dict):
    """Plain model forward when no job names an adapter (the model as it is, its active adapter included);
    else row i through jobs[i].adapter (None = the base), the model holding every adapter named."""
    named = list(dict.fromkeys(j.adapter for j in jobs if j.adapter is not None))
    if not named:
        return lambda adapters, **inputs: model(**inputs)
    missing = [a for a in named if a not in getattr(model, "peft_config", {})]
    if missing:
        raise ValueError(f"adapters {missing} are not loaded in the model")
    rowlora = _ROWLORA.get(model)
    if rowlora is None:
        rowlora = _ROWLORA[model] = RowLoRA(model)
    router = AdapterRouter(model, stats, rowlora)
    for a in model.peft_config:  # restacked now: the weights may have changed since the last call
        router.added(a)
    return router


@torch.no_grad()
def generate_jobs(model, tokenizer, jobs: list[GenJob], max_batch: int = 16,
                  stats: dict | None = None) -> list[GenResult]:
    """Every job's result, in the jobs' order: at most `max_batch` rows decode together."""
    if not jobs:
        return []
    model.eval()
    batch = RunningBatch(model, tokenizer, None, stats)
    batch.forward = _forward_for(model, jobs, batch.stats)
    share_prefixes(batch, jobs)
    # one adapter's rows together (they share its prefix), and similar lengths prefill together
    waiting = deque(sorted(jobs, key=lambda j: (j.adapter or "", len(j.prompt_ids))))
    while waiting or batch.rows:
        if waiting and batch.open and len(batch.rows) < max_batch:
            batch.admit([waiting.popleft() for _ in range(min(max_batch - len(batch.rows), len(waiting)))])
        elif batch.rows:
            batch.step()
    return [j.future.result() for j in jobs]


def share_prefixes(batch: RunningBatch, jobs: list[GenJob]) -> None:
    """Per adapter, the prompts' common start is computed once (eval's prompts share the chat template and
    the task's instruction: 55-77 of about 100 tokens on the built-in tasks)."""
    by_adapter: dict[str | None, list[list[int]]] = {}
    for j in jobs:
        by_adapter.setdefault(j.adapter, []).append(j.prompt_ids)
    for adapter, prompts in by_adapter.items():
        n = common_prefix(prompts)
        if len(prompts) > 1 and n >= MIN_SHARED_PREFIX:
            batch.share_prefix(adapter, prompts[0][:n])


@torch.no_grad()
def stream_tokens(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, stop: list[str] | None = None,
                  sampling: SamplingParams | None = None, adapter: str | None = None) -> Iterator[Delta]:
    """One prompt's answer as it is decoded: a Delta per step that adds text, the last with its finish reason."""
    model.eval()
    out: list[Delta] = []
    job = GenJob(adapter, list(prompt_ids), max_new_tokens, list(stop or []), sampling or SamplingParams(),
                 on_delta=out.append)
    batch = RunningBatch(model, tokenizer, None)
    batch.forward = _forward_for(model, [job], batch.stats)
    batch.admit([job])
    while True:
        yield from out
        out.clear()
        if not batch.rows:
            return
        batch.step()
