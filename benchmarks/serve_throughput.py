"""Serving benchmark: tunewise serve's engine (continuous batching, mixed adapters) vs one-at-a-time with
set_adapter, and vs the bare base.

Same process, same model, same requests: C concurrent clients each send R completion requests for their own
adapter (client i -> adapter i % A); every request asks for T greedy tokens. Prints:
  1. throughput (generated tokens/s) and per-request latency (p50 / p99) of tunewise's engine vs a FIFO worker
     that serves one request at a time, calling set_adapter when the adapter changes (the usual single-adapter
     serving loop);
  2. swap latency: set_adapter between two loaded adapters, and a cold load (check + load from disk);
  3. throughput with adapters vs the bare base (the same batched traffic on the base alone, no PEFT).

The adapters are fingerprint adapters trained on both prompts and checked before timing: each must answer each
prompt greedily with ' Word Word' (the base really learned them). Every answer of every round is checked the
same way, so "0 wrong answers" means no request got another adapter's (or the base's) answer. Exit 1 otherwise.

  .venv/bin/python benchmarks/serve_throughput.py [--base tiny] [--clients 8] [--requests 4] [--tokens 16]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the fingerprint adapters are a test helper (tests/fingerprint_adapters.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402


def pick_base(name: str) -> str:
    """A local folder for the base (adapters record where their base lives)."""
    from tunewise.models import resolve_base

    ref = resolve_base(name)
    return str(ref.path) if ref.path else name


PROMPTS = ("ID:", "Hello. ID:")


def n_tokens(ids: list[int], max_new: int, eos: int) -> int:
    """Generated tokens before EOS (what a server reports as completion tokens)."""
    ids = ids[:max_new]
    return ids.index(eos) if eos in ids else len(ids)


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def learned_adapters(base: str, folder: Path, words: list[str]) -> None:
    """Train (or reuse) one fingerprint adapter per word on both prompts, and make sure the base learned it:
    greedy answers ' Word Word' to each prompt. Retrain harder (more steps, another seed) if not."""
    from fingerprint_adapters import learned, make_fingerprint_adapter

    from tunewise.evaluate.generation import greedy_generate
    from tunewise.models import load_tuned

    for w in words:
        out = folder / w.lower()
        for attempt in range(4):
            if not (out / "adapter_model.safetensors").exists():
                make_fingerprint_adapter(base, out, w, prompt=PROMPTS, steps=40 * (attempt + 1), seed=attempt)
            model, tok = load_tuned(out, dtype="fp32", device="cpu")
            answers = greedy_generate(model, tok, list(PROMPTS), max_new_tokens=8)
            if all(learned(a, w) for a in answers):
                break
            import shutil

            shutil.rmtree(out)
        else:
            sys.exit(f"adapter {w!r} was not learned by {base} after 4 tries: {answers}")


def clients_run(n_clients: int, n_requests: int, ask) -> tuple[float, list]:
    """Start n_clients threads, each calling ask(client, i) n_requests times; (wall seconds, results)."""
    results: list = []
    lock = threading.Lock()
    start = threading.Barrier(n_clients + 1)

    def client(c: int) -> None:
        start.wait()
        for i in range(n_requests):
            r = ask(c, i)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, results


class SetAdapterServer:
    """Baseline: one worker, one request per forward, set_adapter when the adapter changes."""

    def __init__(self, model, tokenizer):
        self.model, self.tok = model, tokenizer
        self.q: queue.Queue = queue.Queue()
        self.current: str | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            item = self.q.get()
            if item is None:
                return
            adapter, ids, n, box, done = item
            if adapter is not None and adapter != self.current:
                self.model.set_adapter(adapter)
                self.current = adapter
            x = torch.tensor([ids])
            kwargs = dict(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                          pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id)
            if adapter is None:
                with self.model.disable_adapter():
                    out = self.model.generate(**kwargs)
            else:
                out = self.model.generate(**kwargs)
            box.append(out[0, x.shape[1]:].tolist())
            done.set()

    def ask(self, adapter: str | None, ids: list[int], n: int) -> list[int]:
        box: list = []
        done = threading.Event()
        self.q.put((adapter, ids, n, box, done))
        done.wait()
        return box[0]

    def close(self) -> None:
        self.q.put(None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="tiny")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4, help="requests per client")
    ap.add_argument("--tokens", type=int, default=16, help="max new tokens per request")
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is reported")
    args = ap.parse_args()

    ap.add_argument("--max-batch", type=int, default=16, help="the engine's running-batch size")
    args = ap.parse_args()

    from fingerprint_adapters import FINGERPRINT_WORDS, learned
    from peft import PeftModel

    from tunewise.adapters import BaseInfo
    from tunewise.models import load_base
    from tunewise.serve.batching import Engine, GenJob, left_pad, wrap_base
    from tunewise.serve.registry import Registry

    base = pick_base(args.base)
    # Adapters are cached per base (training them is not what is measured).
    key = hashlib.sha256(str(Path(base).resolve()).encode()).hexdigest()[:10]  # stable across runs, unlike hash()
    tmp = Path(tempfile.gettempdir()) / f"serve-bench-adapters2-{key}"
    words = FINGERPRINT_WORDS[: args.adapters]
    names = [w.lower() for w in words]
    t0 = time.perf_counter()
    learned_adapters(base, tmp, words)
    print(f"base {base}; {len(names)} fingerprint adapters learned and checked in {time.perf_counter() - t0:.1f}s "
          f"({tmp}); torch threads {torch.get_num_threads()}; best of {args.rounds} interleaved rounds per system")

    model, tok = load_base(base, dtype="fp32", device="cpu")
    eos = tok.eos_token_id
    ids_of = {p: tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS}
    prompts = list(ids_of)

    def adapter_for(c: int) -> str:
        return names[c % len(names)]

    # tunewise: the serving engine (single worker, continuous batching, mixed adapters in each step)
    registry = Registry(BaseInfo.from_model(model, Path(base).name, Path(base)), tmp)
    registry.scan()
    engine = Engine(wrap_base(model), tok, registry, max_loaded=len(names), max_batch=args.max_batch,
                    batch_wait_s=0.005).start()
    for n in names:
        engine.load(n).result()

    def ask_engine(c: int, i: int, adapter: str | None = "x"):
        a = adapter_for(c) if adapter == "x" else adapter
        t = time.perf_counter()
        r = engine.submit(GenJob(a, ids_of[prompts[i % 2]], args.tokens)).result()
        return a, r.text, r.completion_tokens, time.perf_counter() - t

    # baseline: set_adapter switching, one request per forward, on its own copy of the model
    bare, _ = load_base(base, dtype="fp32", device="cpu")
    peft_model = PeftModel.from_pretrained(bare, str(tmp / names[0]), adapter_name=names[0])
    for n in names[1:]:
        peft_model.load_adapter(str(tmp / n), adapter_name=n)
    peft_model.eval()
    baseline = SetAdapterServer(peft_model, tok)

    def ask_baseline(c: int, i: int):
        a = adapter_for(c)
        t = time.perf_counter()
        out = baseline.ask(a, ids_of[prompts[i % 2]], args.tokens)
        n = n_tokens(out, args.tokens, eos)
        return a, tok.decode(out[:n], skip_special_tokens=True), n, time.perf_counter() - t

    # bare base, batched, no PEFT at all: the same traffic as one batch of `clients` rows per round
    plain, _ = load_base(base, dtype="fp32", device="cpu")
    plain.eval()
    x, mask = left_pad([ids_of[prompts[i % 2]] for i in range(args.clients)], tok.pad_token_id)

    # bare base through the same engine and client threads, no PEFT: what serving costs without adapters
    bare_engine_model, _ = load_base(base, dtype="fp32", device="cpu")
    bare_engine_model.eval()
    bare_engine = Engine(bare_engine_model, tok, Registry(registry.base, None), max_loaded=1,
                         max_batch=args.max_batch, batch_wait_s=0.005).start()

    def ask_bare_engine(c: int, i: int):
        r = bare_engine.submit(GenJob(None, ids_of[prompts[i % 2]], args.tokens)).result()
        return None, r.text, r.completion_tokens, 0.0

    def run_plain() -> tuple[float, int]:
        t = time.perf_counter()
        n = 0
        with torch.no_grad():
            for _ in range(args.requests):
                out = plain.generate(input_ids=x, attention_mask=mask, max_new_tokens=args.tokens,
                                     do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=eos)
                n += sum(n_tokens(r, args.tokens, eos) for r in out[:, x.shape[1]:].tolist())
        return time.perf_counter() - t, n

    ask_engine(0, 0), ask_baseline(0, 0), ask_bare_engine(0, 0), run_plain()  # warm-up
    best: dict[str, tuple[float, int]] = {}
    latency: dict[str, list[float]] = {"tunewise": [], "baseline": []}
    wrong = wrong_bl = 0

    def n_wrong(res: list) -> int:
        return sum(not learned(t, words[names.index(a)]) for a, t, _, _ in res)

    def keep(key: str, wall: float, tokens: int) -> None:
        if key not in best or tokens / wall > best[key][1] / best[key][0]:
            best[key] = (wall, tokens)

    for _ in range(args.rounds):  # interleaved, so background load hits every system alike
        wall, res = clients_run(args.clients, args.requests, ask_engine)
        keep("tunewise", wall, sum(r[2] for r in res))
        latency["tunewise"] += [r[3] for r in res]
        wrong += n_wrong(res)
        wall, res = clients_run(args.clients, args.requests, ask_baseline)
        keep("baseline", wall, sum(r[2] for r in res))
        latency["baseline"] += [r[3] for r in res]
        wrong_bl += n_wrong(res)
        wall, res = clients_run(args.clients, args.requests, lambda c, i: ask_engine(c, i, None))
        keep("tw_base_rows", wall, sum(r[2] for r in res))
        wall, res = clients_run(args.clients, args.requests, ask_bare_engine)
        keep("bare_engine", wall, sum(r[2] for r in res))
        keep("plain", *run_plain())
    stats = dict(engine.stats)
    baseline.close()

    swaps, cold = [], []
    for k in range(200):
        t = time.perf_counter()
        peft_model.set_adapter(names[k % len(names)])
        swaps.append(time.perf_counter() - t)
    for _ in range(5):  # a cold load (check + load_adapter) of an evicted adapter
        engine.unload(names[0]).result()
        t = time.perf_counter()
        engine.load(names[0]).result()
        cold.append(time.perf_counter() - t)
    engine.stop()
    bare_engine.stop()
    (wall_tw, _), (wall_bl, _) = best["tunewise"], best["baseline"]

    tp = {k: n / w for k, (w, n) in best.items()}
    print(f"\nworkload: {args.clients} clients x {args.requests} requests x {args.tokens} tokens, "
          f"{len(names)} adapters (client i -> adapter i % {len(names)})")
    n_answers = args.rounds * args.clients * args.requests

    def lat(k: str) -> str:
        return f"latency p50 {percentile(latency[k], 50) * 1e3:.0f} ms, p99 {percentile(latency[k], 99) * 1e3:.0f} ms"

    print(f"tunewise continuous batching    : {tp['tunewise']:8.1f} tok/s  ({wall_tw:.2f}s; {lat('tunewise')}; "
          f"{stats['steps']} decoding steps, {stats['mixed_batches']} mixed, max {stats['max_rows']} rows; "
          f"wrong answers {wrong}/{n_answers})")
    print(f"baseline set_adapter, 1 at a time: {tp['baseline']:8.1f} tok/s  ({wall_bl:.2f}s; {lat('baseline')}; "
          f"wrong answers {wrong_bl}/{n_answers})")
    print(f"RATIO batching / set_adapter     : {tp['tunewise'] / tp['baseline']:.2f}x  (target >= 2x)")
    print(f"swap latency set_adapter (loaded): median {statistics.median(swaps) * 1e6:.0f} us; "
          f"tunewise routes rows per forward, no swap")
    print(f"cold load (check + load_adapter) : median {statistics.median(cold) * 1e3:.1f} ms")
    print(f"base rows through the engine     : {tp['tw_base_rows']:8.1f} tok/s")
    print(f"bare base, same engine, no PEFT  : {tp['bare_engine']:8.1f} tok/s")
    print(f"bare base, static generate batch : {tp['plain']:8.1f} tok/s  (one batch of {args.clients} rows: no "
          "client threads, no joins)")
    print(f"RATIO adapters / bare base       : {tp['tunewise'] / tp['bare_engine']:.2f}x through the same engine "
          f"(target >= 0.8x); {tp['tunewise'] / tp['plain']:.2f}x vs the static generate batch")
    if wrong or wrong_bl:
        sys.exit(f"{wrong + wrong_bl} answers did not come from the adapter asked for")


if __name__ == "__main__":
    main()
