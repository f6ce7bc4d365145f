"""Request guards as one ASGI middleware: API key, body size, body deadline, concurrent-request limit; errors in
OpenAI's shape.

A pure ASGI layer (not a FastAPI dependency) so it runs before the body is parsed: an oversize body is refused
from its Content-Length or while it streams in. The body must arrive within `body_timeout_s`, and a request is
counted against `max_concurrent` only once its body is in: a client that sends headers and then trickles (or
never sends) its body holds no slot, and is answered 408 at the deadline.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the server (README: security); each has a `tunewise serve` flag."""

    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 10.0  # the whole body must arrive within this (--body-timeout)
    max_concurrent: int = 64  # requests whose body has arrived, being answered (--max-concurrent)
    max_request_rows: int = 256  # prompts x n of one request (--max-request-rows)
    max_queued_rows: int = 1024  # rows queued or generating, all requests together (--max-queued-rows)
    max_tokens: int = 512  # largest max_tokens a request may ask for
    max_context: int | None = None  # prompt + max_tokens; None = the base's max_position_embeddings
    default_max_tokens: int = 16  # OpenAI's default for /v1/completions
    open_paths: tuple[str, ...] = ("/health",)


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 408: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
               429: "rate_limit_error", 503: "server_error"}


async def send_error(send, status: int, message: str, code: str | None = None,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error_body(message, ERROR_TYPES.get(status, "server_error"), code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v
    return None


def key_ok(scope, api_key: str) -> bool:
    auth = _header(scope, b"authorization") or b""
    scheme, _, token = auth.decode("latin-1").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


class Guard:
    """ASGI middleware: 401 without the key, 413 for a body over the limit, 408 for a body that does not arrive in
    time, 429 past the concurrency limit (counted from when the body is in)."""

    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits
        self.in_flight = 0  # only touched on the event loop thread

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        lim = self.limits
        guarded = scope["path"] not in lim.open_paths
        if guarded and lim.api_key and not key_ok(scope, lim.api_key):
            missing = _header(scope, b"authorization") is None
            return await send_error(
                send, 401, "missing API key: send 'Authorization: Bearer <key>'" if missing
                else "incorrect API key", code="invalid_api_key", headers=[(b"www-authenticate", b"Bearer")])
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > lim.max_body_bytes:
            return await send_error(send, 413, f"request body of {int(length)} bytes is over the limit of "
                                    f"{lim.max_body_bytes} bytes", code="request_too_large")
        body = await self._read_body(scope, receive, send)
        if body is None:  # refused (413, 408) or the client left: answered already
            return
        if guarded and self.in_flight >= lim.max_concurrent:
            return await send_error(send, 429, f"too many concurrent requests (limit {lim.max_concurrent}, "
                                    "--max-concurrent); retry shortly", code="rate_limit_exceeded",
                                    headers=[(b"retry-after", b"1")])
        self.in_flight += guarded
        try:
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.in_flight -= guarded

    async def _read_body(self, scope, receive, send) -> bytes | None:
        """The whole body (bounded in size and time, so a chunked upload cannot exceed the limit and a slow one
        cannot wait forever); None once it has been refused or the client has gone."""
        lim = self.limits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lim.body_timeout_s
        body = bytearray()
        more = scope["method"] in ("POST", "PUT", "PATCH")
        while more:
            try:
                msg = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                await send_error(send, 408, f"the request body did not arrive within {lim.body_timeout_s:g} s "
                                 "(--body-timeout)", code="request_timeout", headers=[(b"connection", b"close")])
                return None
            if msg["type"] == "http.disconnect":
                return None
            body += msg.get("body", b"")
            if len(body) > lim.max_body_bytes:
                await send_error(send, 413, f"request body is over the limit of {lim.max_body_bytes} bytes",
                                 code="request_too_large")
                return None
            more = msg.get("more_body", False)
        return bytes(body)
