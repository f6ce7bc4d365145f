"""Request guards as one ASGI middleware: API key, body size, concurrent-request limit; errors in OpenAI's shape.

A pure ASGI layer (not a FastAPI dependency) so it runs before the body is parsed: an oversize body is refused
from its Content-Length or while it streams in, and the concurrency count covers the whole request.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_concurrent: int = 64
    max_tokens: int = 512  # largest max_tokens a request may ask for
    max_context: int | None = None  # prompt + max_tokens; None = the base's max_position_embeddings
    default_max_tokens: int = 16  # OpenAI's default for /v1/completions
    open_paths: tuple[str, ...] = ("/health",)


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
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
    """ASGI middleware: 401 without the key, 413 for a body over the limit, 429 past the concurrency limit."""

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
        if guarded and self.in_flight >= lim.max_concurrent:
            return await send_error(send, 429, f"too many concurrent requests (limit {lim.max_concurrent}); "
                                    "retry shortly", code="rate_limit_exceeded", headers=[(b"retry-after", b"1")])
        self.in_flight += guarded
        try:
            # Read the body here (bounded) so a chunked upload cannot exceed the limit, then replay it.
            body = bytearray()
            more = scope["method"] in ("POST", "PUT", "PATCH")
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                body += msg.get("body", b"")
                if len(body) > lim.max_body_bytes:
                    return await send_error(send, 413, f"request body is over the limit of {lim.max_body_bytes} "
                                            "bytes", code="request_too_large")
                more = msg.get("more_body", False)
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.in_flight -= guarded
