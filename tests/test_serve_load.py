"""Isolation under load: a few hundred concurrent mixed requests while another adapter is loaded and unloaded.

Every answer must carry its own adapter's fingerprint (zero wrong-adapter answers) and no request may fail.
`--max-loaded 3` with four adapters in play keeps the LRU evicting and reloading throughout.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fingerprint_adapters import fingerprint_of

KEY = "load-key"
WORDS = {"oslo": "Oslo", "lima": "Lima", "porto": "Porto", "kyoto": "Kyoto"}
PROMPTS = ["ID:", "Hello. ID:"]
N_REQUESTS = 300


@pytest.fixture(scope="module")
def registry(tmp_path_factory, fingerprint_adapter) -> Path:
    root = tmp_path_factory.mktemp("load-registry")
    for name, word in WORDS.items():
        fingerprint_adapter(word, root / name)
    return root


def test_mixed_requests_never_get_the_wrong_adapter(tiny_base_dir, registry):
    from tunewise.serve.app import BackgroundServer, build_server, create_app
    from tunewise.serve.security import Limits

    srv = build_server(str(tiny_base_dir), registry, max_loaded=3, max_batch=16, dtype="fp32", device="cpu",
                       preload=False)
    models = [srv.base_name, "oslo", "lima", "porto"]
    plan = list(itertools.islice(itertools.cycle(itertools.product(models, PROMPTS)), N_REQUESTS))
    headers = {"Authorization": f"Bearer {KEY}"}
    with BackgroundServer(create_app(srv, Limits(api_key=KEY, max_concurrent=128))) as bg, \
            httpx.Client(base_url=bg.url, headers=headers, timeout=300,
                         limits=httpx.Limits(max_connections=64)) as http:
        done = threading.Event()
        admin_log: list[tuple[str, int, str]] = []

        def churn() -> None:
            """Load kyoto, ask it, unload it: again and again while the traffic runs."""
            while not done.is_set():
                admin_log.append(("load", http.post("/admin/adapters/load", json={"name": "kyoto"}).status_code, ""))
                r = http.post("/v1/completions", json={"model": "kyoto", "prompt": "ID:", "max_tokens": 2})
                admin_log.append(("ask", r.status_code, r.json()["choices"][0]["text"] if r.status_code == 200
                                  else r.text))
                admin_log.append(("unload", http.post("/admin/adapters/unload", json={"name": "kyoto"}
                                                      ).status_code, ""))

        def ask(item: tuple[str, str]) -> tuple[str, int, str]:
            model, prompt = item
            r = http.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 2})
            return model, r.status_code, r.json()["choices"][0]["text"] if r.status_code == 200 else r.text

        admin = threading.Thread(target=churn)
        admin.start()
        try:
            with ThreadPoolExecutor(24) as pool:
                results = list(pool.map(ask, plan))
        finally:
            done.set()
            admin.join()
    stats = srv.engine.describe()
    srv.close()

    statuses = [s for _, s, _ in results] + [s for _, s, _ in admin_log]
    assert [s for s in statuses if s >= 500] == []
    assert set(statuses) == {200}, [r for r in results + admin_log if r[1] != 200][:5]
    wrong = [(m, t) for m, _, t in results if fingerprint_of(t) != WORDS.get(m)]
    wrong += [("kyoto", t) for op, _, t in admin_log if op == "ask" and fingerprint_of(t) != "Kyoto"]
    assert wrong == [], f"{len(wrong)} answers from the wrong adapter, e.g. {wrong[:5]}"
    assert len(results) == N_REQUESTS and sum(op == "unload" for op, _, _ in admin_log) >= 1
    # The traffic really was batched across adapters, and the LRU really evicted under it.
    assert stats["mixed_batches"] > 0 and stats["max_rows"] > 1 and stats["evictions"] > 0
    assert stats["row_lora_forwards"] > 0 and stats["peft_mixed_forwards"] == 0  # per-row bmm, not sub-batches
    assert stats["rows"] == N_REQUESTS + sum(op == "ask" for op, _, _ in admin_log)
