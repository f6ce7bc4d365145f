"""Greedy generation with stop strings for eval, the retention probes, compare, the pilot and the study, through
the one generation engine (tunewise/generate/: continuous batching with a KV cache, each row stopping at its own
EOS or stop string and its slot refilled at once)."""

from __future__ import annotations

from tunewise.data.formats import prompt_ids
from tunewise.generate.rows import GenJob, stop_cut
from tunewise.generate.run import generate_jobs
from tunewise.progress import progress_bar

# Rows decoded together by default: on the 2-core CPU a decode step of 128 rows costs far less per row than one of
# 16 (smollm2 math, 128 examples: 3.6-3.8 ex/s at 128 rows, 3.2 at 64, 2.0 at 16). A row's KV cache is
# 2 x layers x kv_heads x head_dim x its length: about 1.2 MB at 250 tokens on smollm2, but ~130 MB on a 7B model
# in fp16 -- lower --batch-size there.
GENERATE_ROWS = 128


def greedy_generate(model, tokenizer, prompts: list[str] | list[list[dict]], max_new_tokens: int = 64,
                    stop: list[str] | None = None, batch_size: int = GENERATE_ROWS,
                    adapters: list[str | None] | None = None, progress: str | None = None,
                    stats: dict | None = None) -> list[str]:
    """Greedy completions of `prompts` (text after the prompt, cut at the first stop string or EOS); at most
    `batch_size` rows decode together.

    A prompt is plain text or a list of chat messages; both become tokens by the trainer's rule
    (`formats.prompt_ids`), so a model is asked exactly as it was trained. `adapters` (one per prompt, None = the
    base) sends each prompt through its own adapter of a PeftModel that holds them all, in one batch; without
    it every prompt goes through the model as it is. `progress` labels a bar over the answers (None: no bar).
    `stats` (a dict) is counted into by the engine: rows, steps, prefill and decode seconds.
    """
    if adapters is not None and len(adapters) != len(prompts):
        raise ValueError(f"{len(adapters)} adapters for {len(prompts)} prompts: give one per prompt")
    if max_new_tokens <= 0:  # nothing to generate (the engine always takes a first token)
        return [""] * len(prompts)
    names = adapters if adapters is not None else [None] * len(prompts)
    jobs = [GenJob(a, prompt_ids(p, tokenizer), max_new_tokens, list(stop or []))
            for p, a in zip(prompts, names, strict=True)]
    if progress is None:
        return [r.text for r in generate_jobs(model, tokenizer, jobs, max_batch=batch_size, stats=stats)]
    bar = progress_bar(len(jobs), progress, "answer")
    for j in jobs:  # counted as each row finishes, in whatever order continuous batching finishes them
        j.future.add_done_callback(lambda _f: bar.update(1))
    try:
        return [r.text for r in generate_jobs(model, tokenizer, jobs, max_batch=batch_size, stats=stats)]
    finally:
        bar.close()


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    cut = stop_cut(text, stop)
    return text if cut is None else text[:cut]
