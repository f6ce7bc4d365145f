"""SIGTERM on a real `tunewise serve` process: it stops accepting, finishes the streams in flight, exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

NO_EOS = {"0": -100}  # the tiny base's EOS: banned, every stream runs to max_tokens


def start_server(tiny_base_dir, grace: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tunewise", "serve", "--base", str(tiny_base_dir), "--port",
                             str(port), "--dtype", "fp32", "--device", "cpu", "--grace-period", str(grace)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):  # a hang guard, not a speed limit: startup imports torch on a busy machine
        if proc.poll() is not None:
            pytest.fail(f"serve exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("serve never became healthy")


class Stream(threading.Thread):
    """One streamed completion read to its end; `first` is set once its first chunk arrived."""

    def __init__(self, url: str, max_tokens: int):
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.first = threading.Event()
        self.chunks: list[dict] = []
        self.done = False
        self.error: BaseException | None = None

    def run(self) -> None:
        body = {"model": "tiny-base", "prompt": "ID:", "max_tokens": self.max_tokens, "stream": True,
                "logit_bias": NO_EOS, "temperature": 0, "stream_options": {"include_usage": True}}
        try:
            with httpx.stream("POST", f"{self.url}/v1/completions", json=body, timeout=300) as r:
                for line in r.iter_lines():
                    if line == "data: [DONE]":
                        self.done = True
                    elif line.startswith("data: "):
                        self.chunks.append(json.loads(line[6:]))
                        self.first.set()
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.first.set()


def test_sigterm_finishes_in_flight_streams_then_exits_0(tiny_base_dir, tmp_path):
    import shutil

    base = shutil.copytree(tiny_base_dir, tmp_path / "tiny-base")  # a folder name that is the model id
    proc, url = start_server(base, grace=120)
    streams = [Stream(url, 240) for _ in range(3)]
    try:
        for s in streams:
            s.start()
        for s in streams:
            s.first.wait(300)
        assert all(s.chunks for s in streams), [s.error for s in streams]
        proc.send_signal(signal.SIGTERM)
        refused = False
        while any(s.is_alive() for s in streams):  # new connections are refused while the streams still run
            try:
                httpx.get(f"{url}/health", timeout=2)
            except httpx.ConnectError:
                refused = True
                break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        for s in streams:
            s.join(300)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read()
    assert refused, "the server kept accepting connections after SIGTERM"
    for s in streams:
        assert s.error is None and s.done, s.error
        assert s.chunks[-1]["usage"]["completion_tokens"] == 240  # finished in full, not cut off
        assert [c["choices"][0]["finish_reason"] for c in s.chunks if c["choices"]][-1] == "length"
    assert code == 0, out
    assert "stopped" in out


def test_sigterm_past_the_grace_period_still_exits_0(tiny_base_dir, tmp_path):
    """A request longer than --grace-period is cut off (the server does not hang), and the exit is still 0."""
    import shutil

    base = shutil.copytree(tiny_base_dir, tmp_path / "tiny-base")
    proc, url = start_server(base, grace=0)
    stream = Stream(url, 480)
    try:
        stream.start()
        stream.first.wait(300)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
        stream.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, proc.stdout.read()
    assert stream.chunks and not stream.done  # cut off mid-stream, without its [DONE]
