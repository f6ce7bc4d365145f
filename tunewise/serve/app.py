"""The OpenAI-compatible HTTP app: /v1/models, /v1/completions, /v1/chat/completions, /health, /admin/adapters.

`build_server` loads the base once and wraps it for mixed-adapter batches; `create_app` turns that into a
FastAPI app (the routes are in routes.py) guarded by `security.Guard`. Requests only tokenise and wait: all
model work happens on the engine's single worker thread (see batching.py).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from transformers import DynamicCache

from tunewise.adapters import BaseInfo
from tunewise.errors import TunewiseError
from tunewise.hf import context_length
from tunewise.models import load_base, resolve_base
from tunewise.serve import kv
from tunewise.serve.batching import Engine, wrap_base
from tunewise.serve.errors import add_error_handlers
from tunewise.serve.registry import Registry
from tunewise.serve.routes import Context, router
from tunewise.serve.sampling import SamplingParams
from tunewise.serve.security import Guard, Limits
from tunewise.targets import resolve_target

log = logging.getLogger("tunewise.serve")


# ------------------------------------------------------------------------------------------ the server


@dataclass
class Server:
    engine: Engine
    registry: Registry
    tokenizer: Any
    base_name: str
    max_context: int
    created: int
    defaults: SamplingParams = SamplingParams()  # for fields a request leaves out: the base's generation_config
    vocab_size: int = 0  # the logits' width: logit_bias keys must be below it

    def close(self) -> None:
        self.engine.stop()


def base_id(base: str) -> str:
    """The id clients use for the base: 'tiny', a hub id, or a local folder's name."""
    target = resolve_target(base)
    return target.path.resolve().name if target.path is not None else base


def adapter_folder(path: Path) -> Path:
    """A run directory stands for its adapter/ folder (tunewise.targets.resolve_target); anything else is
    checked by the registry as given, so its refusal names the problem."""
    try:
        return resolve_target(path).path or path
    except TunewiseError:
        return path


def build_server(base: str = "tiny", adapters_dir: str | Path | None = None,
                 adapters: dict[str, str | Path] | None = None, *, max_loaded: int = 8,
                 pins: list[str] | None = None, allow_runtime_paths: bool = False, device: str | None = None,
                 dtype: str | None = None, max_batch: int = 16, batch_wait_ms: float = 5.0,
                 base_name: str | None = None, preload: bool = True) -> Server:
    """Load the base, check the adapters, start the worker. Adapters that fail their check are reported."""
    model, tokenizer = load_base(base, dtype=dtype, device=device)
    model.eval()
    check_cache_kind(model, base)
    ref = resolve_base(base)
    info = BaseInfo.from_model(model, base_name or base_id(base), ref.path)
    registry = Registry(info, Path(adapters_dir) if adapters_dir else None,
                        {k: adapter_folder(Path(v)) for k, v in (adapters or {}).items()}, allow_runtime_paths)
    registry.scan()
    for name, reason in registry.refused.items():
        log.warning("adapter '%s' refused: %s", name, reason)
    engine = Engine(wrap_base(model), tokenizer, registry, max_loaded=max_loaded, max_batch=max_batch,
                    batch_wait_s=batch_wait_ms / 1000).start()
    for name in pins or []:
        engine.pin(name, True).result()
    if preload:  # fill free slots up front so the first requests do not pay for loading
        for name in list(registry.entries())[: max(0, max_loaded - len(pins or []))]:
            engine.load(name).result()
    max_ctx = context_length(model.config) or 2048
    return Server(engine, registry, tokenizer, info.name, max_ctx, int(time.time()),
                  default_sampling(getattr(model, "generation_config", None)), int(model.config.vocab_size))


def check_cache_kind(model, base: str) -> None:
    """Refuse, before serving, a base whose KV cache the continuous batcher cannot merge (sliding windows)."""
    try:
        kv.check_cache(DynamicCache(config=model.config))
    except NotImplementedError as e:
        raise TunewiseError(f"cannot serve '{base}': {e} (its attention uses a sliding window)",
                            "serve a base with full attention, e.g. a Llama / SmolLM / Qwen2 model") from None


def default_sampling(gen_config) -> SamplingParams:
    """What a request that names no sampling field gets: the base's generation_config, read as `generate` reads
    it (greedy unless it sets do_sample), as vLLM does with --generation-config auto."""
    if gen_config is None or not getattr(gen_config, "do_sample", False):
        return SamplingParams()
    return SamplingParams(temperature=float(gen_config.temperature if gen_config.temperature is not None else 1.0),
                          top_p=float(gen_config.top_p if gen_config.top_p is not None else 1.0),
                          top_k=int(gen_config.top_k or 0))


# ------------------------------------------------------------------------------------------------- app


def create_app(server: Server, limits: Limits | None = None) -> FastAPI:
    """The FastAPI app for `server`: the routes of routes.py, errors in OpenAI's shape, behind `security.Guard`."""
    limits = limits or Limits()
    app = FastAPI(title="tunewise serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.context = Context(server, limits)
    add_error_handlers(app)
    app.include_router(router)
    app.add_middleware(Guard, limits=limits)
    return app


# ------------------------------------------------------------------------------------- in-process server


class BackgroundServer:
    """uvicorn on a background thread (tests, benchmarks, notebooks); port 0 picks a free loopback port."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=30))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread exited before it started")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
