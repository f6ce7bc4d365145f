"""Waiting for generation jobs from the event loop: all at once (`run_jobs`), or as server-sent events, one
chunk per new piece of text per choice (`stream_jobs`). A client that goes away frees its rows at the
engine's next step."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import anyio
from fastapi.responses import StreamingResponse

from tunewise.adapters import AdapterRefused
from tunewise.serve import protocol
from tunewise.serve.batching import Delta, Engine, GenJob, GenResult
from tunewise.serve.errors import ApiError
from tunewise.serve.security import error_body

log = logging.getLogger("tunewise.serve")


GONE_POLL_S = 0.25  # how often a waiting non-streamed request asks whether its client is still there


async def run_jobs(engine: Engine, jobs: list[GenJob],
                   client_gone: Callable[[], Awaitable[bool]] | None = None) -> list[GenResult]:
    """Every job's result. With `client_gone` (Starlette's request.is_disconnected), a client that hangs up
    while it waits frees its rows at the engine's next step instead of having them generated to the end."""
    try:
        waiting = asyncio.gather(*(asyncio.wrap_future(engine.submit(j)) for j in jobs))
        while client_gone is not None and not waiting.done():
            await asyncio.wait({waiting}, timeout=GONE_POLL_S)
            if not waiting.done() and await client_gone():
                raise ApiError(499, "the client closed the request before its answer was ready", "client_closed")
        return list(await waiting)
    except AdapterRefused as e:
        raise ApiError.from_refusal(e) from e
    finally:  # the client went away (or another choice failed): free the rest at the next step
        for j in jobs:
            if not j.future.done():
                j.cancelled.set()


def sse_line(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


class JobEvents:
    """The submitted jobs' deltas and completions, in the order the worker thread produced them."""

    def __init__(self, engine: Engine, jobs: list[GenJob]):
        self.jobs = jobs
        self.done: set[int] = set()
        loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        for i, j in enumerate(jobs):
            j.on_delta = lambda d, i=i: loop.call_soon_threadsafe(self.events.put_nowait, (i, d))
            j.future.add_done_callback(lambda f, i=i: loop.call_soon_threadsafe(self.events.put_nowait, (i, f)))
            engine.submit(j)

    def close(self) -> None:
        for k, j in enumerate(self.jobs):
            if k not in self.done:
                j.cancelled.set()

    async def next_delta(self) -> tuple[int, Delta] | None:
        """The next piece of text; None when every choice has finished. A failed choice raises."""
        while len(self.done) < len(self.jobs):
            i, ev = await self.events.get()
            if isinstance(ev, Delta):
                return i, ev
            if ev.exception() is not None:
                raise ev.exception()
            self.done.add(i)
        return None


async def _chunks(events: JobEvents, first: tuple[int, Delta] | None, chunk: Callable[[int, Delta, bool], dict],
                  head: dict, include_usage: bool) -> AsyncIterator[str]:
    started: set[int] = set()
    ev = first
    try:
        while ev is not None:
            i, d = ev
            yield sse_line({**head, "choices": [chunk(i, d, i not in started)],
                            **({"usage": None} if include_usage else {})})
            started.add(i)
            ev = await events.next_delta()
        if include_usage:
            results = [j.future.result() for j in events.jobs]
            yield sse_line({**head, "choices": [], "usage": protocol.usage(results)})
    except Exception as e:  # headers are out: report in the stream, as OpenAI does
        log.exception("stream failed")
        yield sse_line(error_body(f"generation failed: {type(e).__name__}: {e}", "server_error"))
    yield "data: [DONE]\n\n"


async def stream_jobs(engine: Engine, jobs: list[GenJob], chunk: Callable[[int, Delta, bool], dict], head: dict,
                      include_usage: bool) -> StreamingResponse:
    """Submit `jobs` and stream one SSE chunk per new piece of text per choice (one decoding step each)."""
    events = JobEvents(engine, jobs)
    try:  # the first event comes before any header: a refusal at load time is still a plain HTTP error
        first = await events.next_delta()
    except AdapterRefused as e:
        events.close()
        raise ApiError.from_refusal(e) from e
    except BaseException:
        events.close()
        raise
    return SSEResponse(_chunks(events, first, chunk, head, include_usage), on_close=events.close)


class SSEResponse(StreamingResponse):
    """Server-sent events that notice a client going away even between chunks: a disconnect listener runs
    beside the stream (whatever the ASGI version), and `on_close` frees the request's rows either way."""

    def __init__(self, content, on_close: Callable[[], None]):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
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
