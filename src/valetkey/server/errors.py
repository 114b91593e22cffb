"""Errors to HTTP, in one place: every refusal is ``{"error": {"code", "message", ...}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from valetkey.errors import ValetkeyError

log = logging.getLogger("valetkey.server")

_STATUS_CODES = {
    400: "invalid_request",
    401: "invalid_identity",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def envelope(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    headers = {"www-authenticate": 'Bearer realm="valetkey"'} if status == 401 else None
    return JSONResponse(
        {"error": {"code": code, "message": message, **details}}, status, headers=headers
    )


def error_response(exc: ValetkeyError) -> JSONResponse:
    """The response for a refusal: its envelope, ``WWW-Authenticate`` on 401, and ``Retry-After``
    when the error says when to retry (a ``retryAfterSeconds`` detail)."""
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["www-authenticate"] = 'Bearer realm="valetkey"'
    retry = exc.details.get("retryAfterSeconds")
    if isinstance(retry, int) and not isinstance(retry, bool):
        headers["retry-after"] = str(retry)
    return JSONResponse(exc.to_wire(), exc.status, headers=headers or None)


def install(app: FastAPI) -> None:
    @app.exception_handler(ValetkeyError)
    async def _valetkey(_request: Request, exc: ValetkeyError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                "problem": err.get("msg", ""),
            }
            for err in exc.errors()[:20]
        ]
        first = problems[0] if problems else {"field": "", "problem": "invalid"}
        return envelope(
            400, "invalid_request", f"{first['field']}: {first['problem']}", problems=problems
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return envelope(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return envelope(500, "internal_error", "the broker failed to handle this request")
