"""Errors in OpenAI's shape: `ApiError` for what a route refuses, and the handlers that turn every failure (a
refusal, an invalid body, an unknown path, a bug) into {"error": {message, type, param, code}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunewise.adapters import AdapterRefused
from tunewise.serve.security import ERROR_TYPES, error_body

log = logging.getLogger("tunewise.serve")


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        self.status, self.message, self.code, self.param = status, message, code, param
        super().__init__(message)

    @classmethod
    def from_refusal(cls, e: AdapterRefused, param: str | None = "model") -> ApiError:
        return cls(e.status, e.reason, e.code, param)


async def _api_error(_: Request, e: ApiError):
    return JSONResponse(error_body(e.message, ERROR_TYPES.get(e.status, "server_error"), e.code, e.param),
                        status_code=e.status)


async def _invalid(_: Request, e: RequestValidationError):
    err = e.errors()[0] if e.errors() else {"msg": "invalid request", "loc": ()}
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    return JSONResponse(error_body(f"{param + ': ' if param else ''}{err.get('msg')}", code="invalid_value",
                                   param=param), status_code=400)


async def _http(_: Request, e: StarletteHTTPException):
    return JSONResponse(error_body(str(e.detail), ERROR_TYPES.get(e.status_code, "invalid_request_error")),
                        status_code=e.status_code)


async def _unexpected(_: Request, e: Exception):
    log.exception("unexpected error")
    return JSONResponse(error_body(f"internal error: {type(e).__name__}", "server_error"), status_code=500)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
