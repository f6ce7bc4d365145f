"""Can one client stall `tunewise serve` for everyone? (issue 36)

On the tiny base, with the server's default limits (or those given), two phases:
  stall: 8 connections send their headers and part of a body and then nothing, and one client posts 1,000
         prompts in one request; meanwhile another client sends one one-token request. Its latency is the
         figure the issue bounds (5 s): slow bodies must hold no --max-concurrent slot, and 1,000 prompts must not
         be queued (--max-request-rows refuses them).
  largest (--largest): as well, a client sends the largest request the limits allow (--max-request-rows prompts
         of --big-tokens tokens each). The one-token request's latency then depends on the engine's scheduler
         (fairness between clients), not on these limits.
Prints one JSON object: each client's HTTP status and seconds, and the one-token latency of each phase.

  .venv/bin/python benchmarks/serve_stall.py [--largest] [--max-request-rows 256] [--big-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def slow_body(host: str, port: int) -> socket.socket:
    """A client that sends its headers and a third of its body, then nothing."""
    s = socket.create_connection((host, port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 300\r\n\r\n" + b'{"model": "tiny", "prompt": "' + b"x" * 70)
    return s


def post(url: str, body: dict, out: dict, key: str) -> None:
    """POST body; out[key] = (status, seconds)."""
    import httpx

    t = time.perf_counter()
    try:
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=600)
        out[key] = {"status": r.status_code, "seconds": round(time.perf_counter() - t, 3),
                    **({"error": r.json()["error"]["message"]} if r.status_code != 200 else {})}
    except Exception as e:  # noqa: BLE001 -- a benchmark reports what happened to each client
        out[key] = {"status": None, "seconds": round(time.perf_counter() - t, 3), "error": repr(e)}


def phase(url: str, host: str, port: int, base: str, loads: dict[str, dict]) -> dict:
    """Start the loads (slow bodies, then each request in its own thread), time a one-token request from another
    client, wait for the loads; every client's status and seconds."""
    out: dict = {}
    stalls = [slow_body(host, port) for _ in range(8)]
    clients = [threading.Thread(target=post, args=(url, body, out, key)) for key, body in loads.items()]
    for c in clients:
        c.start()
    time.sleep(0.5)  # the loads are in
    post(url, {"model": base, "prompt": "Hi", "max_tokens": 1}, out, "one-token request")
    for c in clients:
        c.join()
    for s in stalls:
        s.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--largest", action="store_true", help="also run the phase with the largest allowed request")
    ap.add_argument("--max-concurrent", type=int, default=8)
    ap.add_argument("--max-request-rows", type=int, default=256)
    ap.add_argument("--max-queued-rows", type=int, default=1024)
    ap.add_argument("--body-timeout", type=float, default=10.0)
    ap.add_argument("--big-tokens", type=int, default=64, help="max_tokens of each row of the largest request")
    args = ap.parse_args()

    from tunewise.serve.app import BackgroundServer, build_server, create_app
    from tunewise.serve.security import Limits

    srv = build_server("tiny", dtype="fp32", device="cpu")
    limits = Limits(max_concurrent=args.max_concurrent, max_request_rows=args.max_request_rows,
                    max_queued_rows=args.max_queued_rows, body_timeout_s=args.body_timeout)
    base, story = srv.base_name, "Tell me a story."
    thousand = {"1000 prompts": {"model": base, "prompt": [story] * 1000, "max_tokens": 16}}
    result: dict = {"limits": {k: v for k, v in vars(limits).items() if k != "api_key"}}
    with BackgroundServer(create_app(srv, limits)) as bg:
        post(bg.url, {"model": base, "prompt": "warm", "max_tokens": 1}, {}, "warm-up")
        result["stall"] = phase(bg.url, bg.host, bg.port, base, thousand)
        if args.largest:
            largest = {"largest allowed": {"model": base, "prompt": [story] * args.max_request_rows,
                                           "max_tokens": args.big_tokens}}
            result["largest"] = phase(bg.url, bg.host, bg.port, base, {**thousand, **largest})
    srv.close()
    result["one_token_latency_s"] = {name: result[name]["one-token request"]["seconds"]
                                     for name in ("stall", "largest") if name in result}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
