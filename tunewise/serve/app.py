"""The OpenAI-compatible HTTP app: /v1/models, /v1/completions, /v1/chat/completions, /health, /admin/adapters.

`build_server` loads the base once and wraps it for mixed-adapter batches; `create_app` turns that into a
FastAPI app guarded by `security.Guard`. Requests only tokenise and wait: all model work happens on the
engine's single worker thread (see batching.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunewise.adapters import AdapterRefused, BaseInfo
from tunewise.data.formats import prompt_ids
from tunewise.models import ALIASES
from tunewise.serve import protocol
from tunewise.serve.batching import Delta, Engine, GenJob, GenResult, wrap_base
from tunewise.serve.protocol import ChatMessage, ChatRequest, CompletionRequest, Refused
from tunewise.serve.registry import Registry, validate_name
from tunewise.serve.sampling import SamplingParams
from tunewise.serve.security import ERROR_TYPES, Guard, Limits, error_body

log = logging.getLogger("tunewise.serve")


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        self.status, self.message, self.code, self.param = status, message, code, param
        super().__init__(message)

    @classmethod
    def from_refusal(cls, e: AdapterRefused, param: str | None = "model") -> ApiError:
        return cls(e.status, e.reason, e.code, param)


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
    p = Path(base).expanduser()
    return p.resolve().name if p.exists() and base not in ALIASES else base


def adapter_folder(path: Path) -> Path:
    """A run directory stands for its adapter/ folder (tunewise.models.resolve_tuned); anything else is
    checked by the registry as given, so its refusal names the problem."""
    from tunewise.errors import TunewiseError
    from tunewise.models import resolve_tuned

    try:
        return resolve_tuned(path).path
    except TunewiseError:
        return path


def build_server(base: str = "tiny", adapters_dir: str | Path | None = None,
                 adapters: dict[str, str | Path] | None = None, *, max_loaded: int = 8,
                 pins: list[str] | None = None, allow_runtime_paths: bool = False, device: str | None = None,
                 dtype: str | None = None, max_batch: int = 16, batch_wait_ms: float = 5.0,
                 base_name: str | None = None, preload: bool = True) -> Server:
    """Load the base, check the adapters, start the worker. Adapters that fail their check are reported."""
    from tunewise.models import load_base, resolve_base

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
    max_ctx = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    return Server(engine, registry, tokenizer, info.name, max_ctx, int(time.time()),
                  default_sampling(getattr(model, "generation_config", None)), int(model.config.vocab_size))


def check_cache_kind(model, base: str) -> None:
    """Refuse, before serving, a base whose KV cache the continuous batcher cannot merge (sliding windows)."""
    from transformers import DynamicCache

    from tunewise.errors import TunewiseError
    from tunewise.serve import kv

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


# ------------------------------------------------------------------------------------------- protocol


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore")


class LoadRequest(_Req):
    name: str
    path: str | None = None  # only with --allow-runtime-paths
    pin: bool | None = None


class UnloadRequest(_Req):
    name: str
    forget: bool = False  # also drop it from the known adapters (runtime / CLI ones)


class PinRequest(_Req):
    name: str
    pinned: bool = True


def _content_text(content: str | list[dict] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for p in content:
        if p.get("type") != "text":
            raise ApiError(400, f"message content of type {p.get('type')!r} is not supported; send text",
                           "unsupported_content", "messages")
        parts.append(str(p.get("text", "")))
    return "".join(parts)


def chat_messages(messages: list[ChatMessage]) -> list[dict]:
    """The request's messages as the trainer's {role, content} records: `formats.prompt_ids` renders them with
    the tokenizer's chat template, or the trainer's default template (what an adapter was trained on)."""
    return [{"role": m.role, "content": _content_text(m.content)} for m in messages]


def _stops(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise ApiError(400, "at most 4 stop sequences", "invalid_value", "stop")
    return stops


# ------------------------------------------------------------------------------------------------- app


def create_app(server: Server, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    max_context = limits.max_context or server.max_context
    app = FastAPI(title="tunewise serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError):
        return JSONResponse(error_body(e.message, ERROR_TYPES.get(e.status, "server_error"), e.code, e.param),
                            status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        err = e.errors()[0] if e.errors() else {"msg": "invalid request", "loc": ()}
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        return JSONResponse(error_body(f"{param + ': ' if param else ''}{err.get('msg')}", code="invalid_value",
                                       param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException):
        return JSONResponse(error_body(str(e.detail), ERROR_TYPES.get(e.status_code, "invalid_request_error")),
                            status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception):
        log.exception("unexpected error")
        return JSONResponse(error_body(f"internal error: {type(e).__name__}", "server_error"), status_code=500)

    def resolve_model(name: str) -> str | None:
        """None for the base, else a known adapter's name; refusals become 400/404."""
        if name == server.base_name:
            return None
        try:
            validate_name(name)
            return server.registry.get(name).name
        except AdapterRefused as e:
            if e.code == "model_not_found":
                raise ApiError(404, f"the model '{name}' does not exist; GET /v1/models lists what this server "
                               "serves", "model_not_found", "model") from e
            raise ApiError.from_refusal(e) from e

    def make_job(adapter: str | None, prompt: str | list[dict], max_tokens: int | None, stop: list[str],
                 params: SamplingParams) -> GenJob:
        n_new = limits.default_max_tokens if max_tokens is None else max_tokens
        if n_new > limits.max_tokens:
            raise ApiError(400, f"max_tokens={n_new} is over this server's limit of {limits.max_tokens}",
                           "invalid_value", "max_tokens")
        ids = prompt_ids(prompt, server.tokenizer)
        if not ids:
            raise ApiError(400, "the prompt is empty", "invalid_value", "prompt")
        if len(ids) + n_new > max_context:
            raise ApiError(400, f"this model's maximum context length is {max_context} tokens; the prompt has "
                           f"{len(ids)} and max_tokens asks for {n_new}", "context_length_exceeded", "max_tokens")
        return GenJob(adapter, ids, n_new, stop, params)

    def checked(req, endpoint: str) -> tuple[int | None, tuple]:
        """Refuse unsupported fields (400 naming the field); (logprobs setting, logit_bias pairs)."""
        try:
            protocol.check_extra(protocol.extra_fields(req), endpoint)
            bias = protocol.logit_bias(req.logit_bias, server.vocab_size)
            if endpoint == "completions":
                return protocol.completion_logprobs(req), bias
            return protocol.chat_logprobs(req), bias
        except Refused as e:
            raise ApiError(400, e.message, "unsupported_field", e.param) from e

    async def run_jobs(jobs: list[GenJob]) -> list[GenResult]:
        try:
            return list(await asyncio.gather(*(asyncio.wrap_future(server.engine.submit(j)) for j in jobs)))
        except AdapterRefused as e:
            raise ApiError.from_refusal(e) from e
        finally:  # the client went away (or another choice failed): free the rest at the next step
            for j in jobs:
                if not j.future.done():
                    j.cancelled.set()

    def sse_line(obj: Any) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    async def stream_jobs(jobs: list[GenJob], chunk: Callable[[int, Delta, bool], dict], head: dict,
                          include_usage: bool) -> StreamingResponse:
        """Submit `jobs` and stream one SSE chunk per new piece of text per choice (one decoding step each)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        for i, j in enumerate(jobs):
            j.on_delta = lambda d, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, d))
            j.future.add_done_callback(lambda f, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, f)))
            server.engine.submit(j)
        done: set[int] = set()

        def close() -> None:
            for k, j in enumerate(jobs):
                if k not in done:
                    j.cancelled.set()

        async def next_delta() -> tuple[int, Delta] | None:
            """The next piece of text; None when every choice has finished. A failed choice raises."""
            while len(done) < len(jobs):
                i, ev = await events.get()
                if isinstance(ev, Delta):
                    return i, ev
                if ev.exception() is not None:
                    raise ev.exception()
                done.add(i)
            return None

        try:  # the first event comes before any header: a refusal at load time is still a plain HTTP error
            first = await next_delta()
        except AdapterRefused as e:
            close()
            raise ApiError.from_refusal(e) from e
        except BaseException:
            close()
            raise

        async def gen():
            started: set[int] = set()
            ev = first
            try:
                while ev is not None:
                    i, d = ev
                    yield sse_line({**head, "choices": [chunk(i, d, i not in started)],
                                    **({"usage": None} if include_usage else {})})
                    started.add(i)
                    ev = await next_delta()
                if include_usage:
                    results = [j.future.result() for j in jobs]
                    yield sse_line({**head, "choices": [], "usage": protocol.usage(results)})
            except Exception as e:  # headers are out: report in the stream, as OpenAI does
                log.exception("stream failed")
                yield sse_line(error_body(f"generation failed: {type(e).__name__}: {e}", "server_error"))
            yield "data: [DONE]\n\n"

        return SSEResponse(gen(), on_close=close)

    @app.get("/health")
    async def health():
        ok = server.engine.alive
        return JSONResponse({"status": "ok" if ok else "worker stopped"}, status_code=200 if ok else 503)

    def model_card(mid: str, parent: str | None) -> dict:
        return {"id": mid, "object": "model", "created": server.created, "owned_by": "tunewise",
                "root": server.base_name, "parent": parent}

    @app.get("/v1/models")
    async def models():
        entries = await asyncio.to_thread(server.registry.scan)
        data = [model_card(server.base_name, None)] + [model_card(n, server.base_name) for n in sorted(entries)]
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        adapter = resolve_model(model_id)
        return model_card(model_id, None if adapter is None else server.base_name)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        logprobs, bias = checked(req, "completions")
        adapter = resolve_model(req.model)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise ApiError(400, "prompt is empty", "invalid_value", "prompt")
        stops = _stops(req.stop)
        jobs = [make_job(adapter, p, req.max_tokens, stops,
                         protocol.sampling(req, server.defaults, logprobs, k, bias))
                for p in prompts for k in range(req.n)]  # choice index = prompt index * n + k, as OpenAI
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": req.model}
        text_of = protocol.TokenText(server.tokenizer)
        if req.stream:
            return await stream_jobs(
                jobs, lambda i, d, _first: protocol.completion_choice(i, d, logprobs, text_of), head,
                bool(req.stream_options and req.stream_options.include_usage))
        results = await run_jobs(jobs)
        return {**head, "choices": [protocol.completion_choice(i, r, logprobs, text_of)
                                    for i, r in enumerate(results)], "usage": protocol.usage(results)}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        logprobs, bias = checked(req, "chat")
        adapter = resolve_model(req.model)
        prompt = chat_messages(req.messages)
        max_tokens = req.max_completion_tokens or req.max_tokens
        stops = _stops(req.stop)
        jobs = [make_job(adapter, prompt, max_tokens, stops,
                         protocol.sampling(req, server.defaults, logprobs, k, bias)) for k in range(req.n)]
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        text_of = protocol.TokenText(server.tokenizer)
        if req.stream:
            head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model}
            return await stream_jobs(
                jobs, lambda i, d, first: protocol.chat_delta_choice(i, d, logprobs, text_of, first), head,
                bool(req.stream_options and req.stream_options.include_usage))
        results = await run_jobs(jobs)
        return {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
                "choices": [protocol.chat_choice(i, r, logprobs, text_of) for i, r in enumerate(results)],
                "usage": protocol.usage(results)}

    # -- admin ------------------------------------------------------------------------------------------
    async def on_worker(fut):
        try:
            return await asyncio.wrap_future(fut)
        except AdapterRefused as e:
            raise ApiError.from_refusal(e, "name") from e

    @app.get("/admin/adapters")
    async def list_adapters():
        entries = await asyncio.to_thread(server.registry.scan)
        state = await on_worker(server.engine.call(server.engine.describe))
        return {"base": server.base_name, **state,
                "known": {n: {"path": str(e.path), "source": e.source} for n, e in sorted(entries.items())},
                "refused": server.registry.refused}

    @app.post("/admin/adapters/load")
    async def load(req: LoadRequest):
        try:
            if req.path is not None:
                await asyncio.to_thread(server.registry.add, req.name, Path(req.path), "runtime")
            else:
                resolve_model(req.name)
        except AdapterRefused as e:
            raise ApiError.from_refusal(e, "path" if req.path else "name") from e
        return await on_worker(server.engine.load(req.name, req.pin))

    @app.post("/admin/adapters/unload")
    async def unload(req: UnloadRequest):
        # An unknown name is a 404, as for pin and load: "unloaded" would hide a typo.
        if await asyncio.to_thread(resolve_model, req.name) is None:
            raise ApiError(400, "the base model cannot be unloaded; name an adapter", "invalid_value", "name")
        state = await on_worker(server.engine.unload(req.name))
        if req.forget:
            server.registry.forget(req.name)
        return state

    @app.post("/admin/adapters/pin")
    async def pin(req: PinRequest):
        resolve_model(req.name)
        return await on_worker(server.engine.pin(req.name, req.pinned))

    app.add_middleware(Guard, limits=limits)
    return app


class SSEResponse(StreamingResponse):
    """Server-sent events that notice a client going away even between chunks: a disconnect listener runs
    beside the stream (whatever the ASGI version), and `on_close` frees the request's rows either way."""

    def __init__(self, content, on_close: Callable[[], None]):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        import anyio

        try:
            async with anyio.create_task_group() as tg:
                async def run_then_cancel(fn) -> None:
                    await fn()
                    tg.cancel_scope.cancel()

                tg.start_soon(run_then_cancel, partial(self.stream_response, send))
                await run_then_cancel(partial(self.listen_for_disconnect, receive))
        except OSError:  # the client went away while a chunk was being sent
            pass
        finally:
            self.on_close()


# ------------------------------------------------------------------------------------- in-process server


class BackgroundServer:
    """uvicorn on a background thread (tests, benchmarks, notebooks); port 0 picks a free loopback port."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import socket
        import threading

        import uvicorn

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
