"""Soak test for `tunewise serve`: steady mixed traffic on a loopback server for a bounded time.

Clients loop over completions and chat, streamed and not, greedy and seeded sampling, across the base and two
fingerprint adapters; some streaming clients leave mid-stream on purpose (their rows must be freed). Reports
requests, errors (any non-200 or transport failure that was not a deliberate disconnect), wrong-adapter answers
(greedy requests are checked against their adapter's fingerprint), and the server process's RSS after warm-up vs at
the end. Exit 1 on any error, any wrong answer, or RSS growth of 5% or more.

  .venv/bin/python benchmarks/serve_soak.py [--seconds 300] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the fingerprint adapters are a test helper (tests/fingerprint_adapters.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def rss_bytes() -> int:
    """This process's resident set (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--warmup", type=float, default=0.1, help="share of the time before the first RSS reading")
    args = ap.parse_args()

    import httpx
    from fingerprint_adapters import fingerprint_of, make_fingerprint_adapter

    from tunewise.serve.app import BackgroundServer, build_server, create_app
    from tunewise.serve.security import Limits
    from tunewise.zoo import TINY_DIR

    root = Path(tempfile.mkdtemp(prefix="serve-soak-"))
    words = {"oslo": "Oslo", "lima": "Lima"}
    for name, word in words.items():
        make_fingerprint_adapter(TINY_DIR, root / name, word)
    srv = build_server(str(TINY_DIR), root, dtype="fp32", device="cpu")
    models = [srv.base_name, *words]
    counts = {"requests": 0, "errors": 0, "wrong": 0, "disconnects": 0}
    examples: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def record(key: str, note: str | None = None) -> None:
        with lock:
            counts[key] += 1
            if note and len(examples) < 5:
                examples.append(note)

    def client(seed: int, url: str) -> None:
        rnd = random.Random(seed)
        with httpx.Client(base_url=url, timeout=120) as http:
            while not stop.is_set():
                model = rnd.choice(models)
                greedy = rnd.random() < 0.5
                body = {"model": model, "max_tokens": rnd.randint(2, 24),
                        **({"temperature": 0} if greedy else {"temperature": 0.9, "seed": rnd.randint(0, 99)})}
                chat = rnd.random() < 0.3
                path = "/v1/chat/completions" if chat else "/v1/completions"
                body.update({"messages": [{"role": "user", "content": "ID:"}]} if chat else {"prompt": "ID:"})
                try:
                    if rnd.random() < 0.4:  # streamed; one in five of these leaves after the first chunk
                        leave = rnd.random() < 0.2
                        with http.stream("POST", path, json={**body, "stream": True}) as r:
                            if r.status_code != 200:
                                record("errors", f"{r.status_code} {r.read()[:200]!r}")
                                continue
                            text = ""
                            for line in r.iter_lines():
                                if line.startswith("data: {"):
                                    ch = json.loads(line[6:])["choices"]
                                    text += (ch[0].get("text") or (ch[0].get("delta") or {}).get("content") or "") \
                                        if ch else ""
                                    if leave:
                                        break
                        if leave:
                            record("disconnects")
                            continue
                    else:
                        r = http.post(path, json=body)
                        if r.status_code != 200:
                            record("errors", f"{r.status_code} {r.text[:200]}")
                            continue
                        ch = r.json()["choices"][0]
                        text = ch["message"]["content"] if chat else ch["text"]
                except httpx.HTTPError as e:
                    record("errors", f"{type(e).__name__}: {e}")
                    continue
                record("requests")
                if greedy and not chat and fingerprint_of(text) != words.get(model):
                    record("wrong", f"{model}: {text!r}")

    with BackgroundServer(create_app(srv, Limits(max_concurrent=256))) as bg:
        threads = [threading.Thread(target=client, args=(i, bg.url), daemon=True) for i in range(args.clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(args.seconds * args.warmup)
        rss0 = rss_bytes()
        time.sleep(args.seconds * (1 - args.warmup))
        rss1 = rss_bytes()
        stop.set()
        for t in threads:
            t.join(300)
        wall = time.monotonic() - t0
        stats = srv.engine.describe()
    srv.close()
    growth = (rss1 - rss0) / rss0
    print(f"soak: {args.seconds:.0f} s, {args.clients} clients, base + {len(words)} adapters, loopback")
    print(f"requests {counts['requests']} ({counts['requests'] / wall:.1f}/s), deliberate disconnects "
          f"{counts['disconnects']}, errors {counts['errors']}, wrong answers {counts['wrong']}")
    print(f"engine: {stats['steps']} decoding steps, {stats['cancelled']} rows cancelled, max {stats['max_rows']} rows, "
          f"running at the end {stats['running']}")
    print(f"RSS after warm-up {rss0 / 2**20:.1f} MiB, at the end {rss1 / 2**20:.1f} MiB: growth {growth * 100:+.2f}% "
          "(target < 5%)")
    for e in examples:
        print("  e.g.", e)
    if counts["errors"] or counts["wrong"] or growth >= 0.05:
        sys.exit(1)


if __name__ == "__main__":
    main()
