"""The ASGI app factory. ``create_app(settings)`` builds everything; nothing happens at import."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from valetkey.core.audit import AuditLog
from valetkey.core.clock import Clock
from valetkey.errors import InvalidRequest, ValetkeyError
from valetkey.server import api_docs, connect, consent, errors, management, metrics, openapi, roles
from valetkey.server.broker import Broker
from valetkey.server.connect import json_response
from valetkey.server.settings import Settings


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (declared or streamed) with 413, before a handler reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await self._refuse(send)
                    return
        seen = 0
        limit = self.limit

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = (
            b'{"error":{"code":"payload_too_large","message":"the request body is larger than '
            + str(self.limit).encode()
            + b' bytes"}}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


#: Methods that never change state (nor record an audit event).
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The one reading method that records audit events: the provider's consent callback.
_AUDITED_READS = frozenset({"/v1/connect/callback"})


class Admission:
    """Admit a request before routing: a printable path, and room in the audit log if it is audited.

    A path holding a control character (after percent-decoding: NUL, CR, LF, ...) is refused
    with 400 ``invalid_request`` naming ``path``: no route would match a LF, and no stored value
    may hold one. Every request that can change state or record an audit event (any method but
    GET, HEAD and OPTIONS, and the consent callback) then awaits ``AuditLog.admit``: at once while
    the backlog is below its soft limit, after a bounded wait above it, and refused with 503
    ``audit_unavailable`` and ``Retry-After`` at the hard limit: the broker does not act on what
    it cannot record. DELETE requests (revocations and removals) never wait and have a reserve
    above the hard limit (``AuditLog.admit``).
    """

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                path: str = scope["path"]
                if not path.isprintable():
                    raise InvalidRequest("the path holds a control character", field="path")
                method = scope["method"]
                if method not in _READS or path in _AUDITED_READS:
                    # DELETE only takes access away (revocations, removals): never held back
                    # while the reserve above the hard limit lasts.
                    await self.audit.admit(revocation=method == "DELETE")
            except ValetkeyError as exc:
                await errors.error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _freeze_startup_objects() -> None:
    """Move what startup built (framework, ORM, migrations: ~10^5 objects) out of the cyclic GC's reach.

    Without it every full collection walks them all and stalls the event loop for ~60 ms
    under load, which is most of the exchange's tail latency. Garbage is collected first,
    so only live objects are frozen; objects created later are collected as usual.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, *, clock: Clock | None = None, broker: Broker | None = None) -> FastAPI:
    """Build the broker's ASGI app. The broker starts (migrations, bootstrap) in the lifespan."""
    the_broker = broker or Broker.create(settings, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await the_broker.start()
        _freeze_startup_objects()
        try:
            yield
        finally:
            await the_broker.close()

    app = FastAPI(
        title="Valetkey",
        summary="A self-hostable runtime credential broker for agents and apps",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # api_docs serves /docs from the package, not a CDN
        redoc_url=None,
    )
    app.state.broker = the_broker
    errors.install(app)
    app.include_router(consent.router)  # before connect: its routes are more specific
    app.include_router(connect.router)
    app.include_router(management.router)
    metrics.install(app, the_broker)  # GET /metrics (Prometheus), a registry per app
    api_docs.install(app)  # GET /docs, Swagger UI with its assets from the package

    @app.get("/.well-known/openid-configuration", tags=["identity"], include_in_schema=True)
    async def openid_configuration() -> Response:
        return json_response(the_broker.issuer.openid_configuration())

    @app.get("/.well-known/jwks.json", tags=["identity"])
    async def jwks() -> Response:
        return json_response(the_broker.issuer.jwks())

    @app.get("/healthz", tags=["operations"], summary="Alive (no dependencies checked)")
    async def healthz() -> Response:
        return json_response({"ok": True})

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Ready: the database answers and the audit writer keeps up",
    )
    async def readyz() -> Response:
        try:
            async with the_broker.db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return json_response({"ok": False, "database": "unreachable"}, 503)
        problem = the_broker.audit.problem()
        if problem is not None:
            return json_response({"ok": False, "audit": problem}, 503)
        return json_response({"ok": True})

    @app.get("/", include_in_schema=False)
    async def index(_request: Request) -> dict[str, Any]:
        return {"name": "valetkey", "docs": "/docs", "openapi": "/openapi.json"}

    build_schema = app.openapi

    def schema_with_errors() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.document_errors(build_schema())
        return app.openapi_schema

    app.openapi = schema_with_errors  # type: ignore[method-assign]
    app.add_middleware(connect.TokenShortcut)  # innermost: after admission, before the router
    app.add_middleware(Admission, audit=the_broker.audit)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)  # outermost
    roles.check_routes(app.routes)  # every route declares its role, or the app is not built
    return app
