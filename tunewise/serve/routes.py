"""The HTTP routes: /health, /v1/models, /v1/completions, /v1/chat/completions and /admin/adapters.

Each route is a module-level function; what it works with (the engine, registry and tokenizer of the `Server`,
and the request limits) comes from `app.state` through the `Ctx` dependency. Requests only tokenise and wait:
all model work happens on the engine's single worker thread (see batching.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ConfigDict

from tunewise.adapters import AdapterRefused
from tunewise.data.formats import prompt_ids
from tunewise.generate.constrain import JsonGrammar, SchemaRefused, json_grammar
from tunewise.inputs import Numbers
from tunewise.serve import protocol
from tunewise.serve.batching import GenJob
from tunewise.serve.errors import ApiError
from tunewise.serve.protocol import ChatMessage, ChatRequest, CompletionRequest, Refused
from tunewise.serve.registry import validate_name
from tunewise.serve.sampling import SamplingParams
from tunewise.serve.security import Limits
from tunewise.serve.streaming import run_jobs, stream_jobs

if TYPE_CHECKING:
    from tunewise.serve.app import Server

router = APIRouter()


class RowBudget:
    """Rows (prompts x n) per request and queued in total: one request cannot ask for more than `per_request`,
    and past `total` rows waiting or generating, new requests get 429. A row is returned when its job finishes,
    fails or is cancelled (its future's callback, on the worker thread: hence the lock)."""

    def __init__(self, per_request: int, total: int):
        self.per_request, self.total = per_request, total
        self.queued = 0
        self._lock = threading.Lock()

    def take(self, rows: int) -> int:
        if rows > self.per_request:
            raise ApiError(400, f"this request asks for {rows} rows (prompts x n); this server's limit is "
                           f"{self.per_request} per request (--max-request-rows)", "too_many_rows", "prompt")
        with self._lock:
            if self.queued + rows > self.total:
                raise ApiError(429, f"{self.queued} rows are queued and this request adds {rows}; this server "
                               f"queues at most {self.total} (--max-queued-rows); retry shortly",
                               "rate_limit_exceeded")
            self.queued += rows
        return rows

    def give_back(self, rows: int) -> None:
        with self._lock:
            self.queued -= rows

    def jobs(self, rows: int, make: Callable[[], list[GenJob]]) -> list[GenJob]:
        """`make()`'s jobs within the budget: `rows` taken first (before any prompt is tokenised), each returned
        when its job is done; all of them at once if making the jobs fails."""
        self.take(rows)
        try:
            jobs = make()
        except BaseException:
            self.give_back(rows)
            raise
        for job in jobs:
            job.future.add_done_callback(lambda _f: self.give_back(1))
        return jobs


@dataclass
class Context:
    """What every route works with: the loaded server, this app's limits and its row budget."""

    server: Server
    limits: Limits
    rows: RowBudget = field(init=False)

    def __post_init__(self) -> None:
        self.rows = RowBudget(self.limits.max_request_rows, self.limits.max_queued_rows)

    @property
    def max_context(self) -> int:
        return self.limits.max_context or self.server.max_context


def context(request: Request) -> Context:
    return request.app.state.context


Ctx = Annotated[Context, Depends(context)]


# ------------------------------------------------------------------------------------------- protocol


class _Req(Numbers):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


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


def resolve_model(server: Server, name: str) -> str | None:
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


def make_job(ctx: Context, adapter: str | None, prompt: str | list[dict], max_tokens: int | None, stop: list[str],
             params: SamplingParams) -> GenJob:
    limits = ctx.limits
    n_new = limits.default_max_tokens if max_tokens is None else max_tokens
    if n_new > limits.max_tokens:
        raise ApiError(400, f"max_tokens={n_new} is over this server's limit of {limits.max_tokens}",
                       "invalid_value", "max_tokens")
    ids = prompt_ids(prompt, ctx.server.tokenizer)
    if not ids:
        raise ApiError(400, "the prompt is empty", "invalid_value", "prompt")
    if len(ids) + n_new > ctx.max_context:
        raise ApiError(400, f"this model's maximum context length is {ctx.max_context} tokens; the prompt has "
                       f"{len(ids)} and max_tokens asks for {n_new}", "context_length_exceeded", "max_tokens")
    return GenJob(adapter, ids, n_new, stop, params)


def checked(server: Server, req, endpoint: str) -> tuple[int | None, tuple]:
    """Refuse unsupported fields (400 naming the field); (logprobs setting, logit_bias pairs)."""
    try:
        protocol.check_extra(protocol.extra_fields(req), endpoint)
        bias = protocol.logit_bias(req.logit_bias, server.vocab_size)
        if endpoint == "completions":
            return protocol.completion_logprobs(req), bias
        return protocol.chat_logprobs(req), bias
    except Refused as e:
        raise ApiError(400, e.message, "unsupported_field", e.param) from e


async def json_mode(server: Server, req) -> JsonGrammar | None:
    """The compiled grammar that response_format asks for (None for text); a 400 naming the field when the
    format or its schema cannot be honoured. Compiled off the event loop: a large schema takes a while."""
    try:
        schema = protocol.response_schema(req.response_format)
    except Refused as e:
        raise ApiError(400, e.message, "unsupported_field", e.param) from e
    if schema is None:
        return None
    try:
        return await asyncio.to_thread(json_grammar, server.tokenizer, schema)
    except SchemaRefused as e:
        raise ApiError(400, f"response_format.json_schema.schema cannot be used for JSON mode: {e}",
                       "invalid_value", "response_format.json_schema.schema") from e


def constraint(grammar: JsonGrammar | None):
    """Each choice's own matcher (it advances with that choice's tokens)."""
    return grammar.start() if grammar is not None else None


# ---------------------------------------------------------------------------------------------- routes


@router.get("/health")
async def health(ctx: Ctx):
    ok = ctx.server.engine.alive
    return JSONResponse({"status": "ok" if ok else "worker stopped"}, status_code=200 if ok else 503)


def model_card(server: Server, mid: str, parent: str | None) -> dict:
    return {"id": mid, "object": "model", "created": server.created, "owned_by": "tunewise",
            "root": server.base_name, "parent": parent}


@router.get("/v1/models")
async def models(ctx: Ctx):
    server = ctx.server
    entries = await asyncio.to_thread(server.registry.scan)
    data = [model_card(server, server.base_name, None)] + [model_card(server, n, server.base_name)
                                                          for n in sorted(entries)]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id}")
async def model(model_id: str, ctx: Ctx):
    adapter = resolve_model(ctx.server, model_id)
    return model_card(ctx.server, model_id, None if adapter is None else ctx.server.base_name)


@router.post("/v1/completions")
async def completions(req: CompletionRequest, ctx: Ctx, request: Request):
    server = ctx.server
    logprobs, bias = checked(server, req, "completions")
    grammar = await json_mode(server, req)
    adapter = resolve_model(server, req.model)
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if not prompts:
        raise ApiError(400, "prompt is empty", "invalid_value", "prompt")
    stops = _stops(req.stop)
    jobs = ctx.rows.jobs(len(prompts) * req.n, lambda: [  # choice index = prompt index * n + k, as OpenAI
        make_job(ctx, adapter, p, req.max_tokens, stops,
                 protocol.sampling(req, server.defaults, logprobs, k, bias, constraint(grammar)))
        for p in prompts for k in range(req.n)])
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": rid, "object": "text_completion", "created": created, "model": req.model}
    text_of = protocol.TokenText(server.tokenizer)
    if req.stream:
        return await stream_jobs(
            server.engine, jobs, lambda i, d, _first: protocol.completion_choice(i, d, logprobs, text_of), head,
            bool(req.stream_options and req.stream_options.include_usage))
    results = await run_jobs(server.engine, jobs, request.is_disconnected)
    return {**head, "choices": [protocol.completion_choice(i, r, logprobs, text_of)
                                for i, r in enumerate(results)], "usage": protocol.usage(results)}


@router.post("/v1/chat/completions")
async def chat(req: ChatRequest, ctx: Ctx, request: Request):
    server = ctx.server
    logprobs, bias = checked(server, req, "chat")
    grammar = await json_mode(server, req)
    adapter = resolve_model(server, req.model)
    prompt = chat_messages(req.messages)
    max_tokens = req.max_completion_tokens or req.max_tokens
    stops = _stops(req.stop)
    jobs = ctx.rows.jobs(req.n, lambda: [
        make_job(ctx, adapter, prompt, max_tokens, stops,
                 protocol.sampling(req, server.defaults, logprobs, k, bias, constraint(grammar)))
        for k in range(req.n)])
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    text_of = protocol.TokenText(server.tokenizer)
    if req.stream:
        head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model}
        return await stream_jobs(
            server.engine, jobs, lambda i, d, first: protocol.chat_delta_choice(i, d, logprobs, text_of, first),
            head, bool(req.stream_options and req.stream_options.include_usage))
    results = await run_jobs(server.engine, jobs, request.is_disconnected)
    return {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [protocol.chat_choice(i, r, logprobs, text_of) for i, r in enumerate(results)],
            "usage": protocol.usage(results)}


# ----------------------------------------------------------------------------------------------- admin


async def on_worker(fut):
    try:
        return await asyncio.wrap_future(fut)
    except AdapterRefused as e:
        raise ApiError.from_refusal(e, "name") from e


@router.get("/admin/adapters")
async def list_adapters(ctx: Ctx):
    server = ctx.server
    entries = await asyncio.to_thread(server.registry.scan)
    state = await on_worker(server.engine.call(server.engine.describe))
    return {"base": server.base_name, **state,
            "known": {n: {"path": str(e.path), "source": e.source} for n, e in sorted(entries.items())},
            "refused": server.registry.refused}


@router.post("/admin/adapters/load")
async def load(req: LoadRequest, ctx: Ctx):
    """Load (or reload) an adapter. Files changed on disk under a served name are reloaded: the old weights are
    unloaded and the new ones loaded by two consecutive worker steps, so every request gets one or the other;
    another path under a served name is a 409. What fails to load is not left listed."""
    server = ctx.server
    added = req.path is not None and req.name not in server.registry.entries()
    try:
        if req.path is not None:
            await asyncio.to_thread(server.registry.add, req.name, Path(req.path), "runtime")
        else:
            resolve_model(server, req.name)
        changed = await asyncio.to_thread(server.registry.refresh, req.name)
    except AdapterRefused as e:
        raise ApiError.from_refusal(e, "path" if req.path else "name") from e
    try:
        if changed:
            await on_worker(server.engine.unload(req.name))
        return await on_worker(server.engine.load(req.name, req.pin))
    except ApiError:
        if added:
            server.registry.forget(req.name)
        raise


@router.post("/admin/adapters/unload")
async def unload(req: UnloadRequest, ctx: Ctx):
    server = ctx.server
    # An unknown name is a 404, as for pin and load: "unloaded" would hide a typo.
    if await asyncio.to_thread(resolve_model, server, req.name) is None:
        raise ApiError(400, "the base model cannot be unloaded; name an adapter", "invalid_value", "name")
    state = await on_worker(server.engine.unload(req.name))
    if req.forget:
        server.registry.forget(req.name)
    return state


@router.post("/admin/adapters/pin")
async def pin(req: PinRequest, ctx: Ctx):
    resolve_model(ctx.server, req.name)
    return await on_worker(ctx.server.engine.pin(req.name, req.pinned))
