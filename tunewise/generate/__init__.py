"""The one generation engine, used by serve, eval, the retention probes, compare, the pilot and the study:
continuous batching over a KV cache, each row stopping at its own EOS or stop string and its slot refilled at
once, admission ordered by prompt length, per-row LoRA (several adapters in one batch), per-row sampling.

    rows.py      a job, its row while it decodes, what it streams and returns; stop-string helpers
    batch.py     the running batch (prefill, merge, step, retire) and the per-row adapter forward
    run.py       the engine in the caller's thread: jobs -> results (`generate_jobs`), one prompt streamed
                 token by token (`stream_tokens`)
    kv.py        the KV cache's rows joining and leaving
    rowlora.py   per-row LoRA with batched matmuls
    sampling.py  per-row greedy / temperature / top-k / top-p choice and logprobs

The server's worker thread (serve/batching.py) drives the same RunningBatch with its queue and adapter cache.
"""
