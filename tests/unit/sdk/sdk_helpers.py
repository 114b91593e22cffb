"""A scripted stand-in for the broker's Connect API, served over httpx2.MockTransport or a socket.

It implements the documented wire format (docs/architecture.md "Wire protocol")
and records every request it receives.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import httpx2

NOW = 1_900_000_000.0  # epoch seconds the frozen clocks start at


@dataclass
class Seen:
    """One request the broker stand-in received."""

    method: str
    path: str
    authorization: str | None
    body: Any


@dataclass
class FakeBroker:
    """Answers Connect API requests; ``script`` overrides the answer per call."""

    lifetime: float | None = 3600.0
    now: Callable[[], float] = lambda: NOW
    delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    #: (status, body-or-bytes) to answer instead, consumed in order.
    script: list[tuple[int, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: int = 0

    @property
    def token_calls(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith("/v1/connect/token/")]

    def answer(
        self, method: str, raw_path: str, authorization: str | None, content: bytes
    ) -> tuple[int, Any]:
        body: Any = json.loads(content) if content else {}
        with self._lock:
            self.seen.append(Seen(method, raw_path, authorization, body))
            self._counter += 1
            serial = self._counter
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            return scripted
        if authorization is None or not authorization.startswith("Bearer "):
            return 401, {"error": {"code": "invalid_identity", "message": "no bearer token"}}
        parts = raw_path.split("/")
        if method == "POST" and raw_path.startswith("/v1/connect/token/"):
            uid = unquote(parts[4])
            expires = None if self.lifetime is None else int((self.now() + self.lifetime) * 1000)
            return 200, {
                "token": f"tok-{serial}",
                "expiresAt": expires,
                "tokenId": f"tid-{serial}",
                "connector": {"id": f"con-{uid}", "uid": uid, "type": "api-key",
                              "name": uid.split("/")[-1], "service": uid.split("/")[0]},
                "metadata": {"subject": body["subject"]},
            }
        if method == "POST" and raw_path.startswith("/v1/connect/authorize/"):
            uid = unquote(parts[4])
            answer: dict[str, Any] = {
                "url": "https://broker.example/consent/abc",
                "request": "req-1",
                "verifier": "ver-secret",
                "expiresAt": int((self.now() + 600) * 1000),
                "connector": {"id": f"con-{uid}", "uid": uid, "type": "oauth"},
            }
            if body.get("deviceCode"):
                answer["deviceCode"] = "dev-secret"
            return 200, answer
        if method == "DELETE" and raw_path.endswith("/tokens"):
            return 200, {"tokensFound": 2, "deleted": 2, "providerRevoked": 1,
                         "providerSkipped": 1, "providerFailed": 0}
        if method == "GET" and raw_path.startswith("/v1/connect/connectors/"):
            uid = unquote(parts[4])
            return 200, {"id": f"con-{uid}", "uid": uid, "type": "api-key", "name": "mybot",
                         "service": "slack", "createdAt": 1_700_000_000_000,
                         "updatedAt": 1_700_000_001_000, "data": {"header": "x-api-key"},
                         "capabilities": {"subjects": ["app"]}, "newField": 1}
        return 404, {"error": {"code": "not_found", "message": "no such route"}}

    # -- httpx2.MockTransport adapters -------------------------------------------------

    def _response(self, request: httpx2.Request) -> httpx2.Response:
        status, body = self.answer(
            request.method,
            request.url.raw_path.decode(),
            request.headers.get("authorization"),
            request.content,
        )
        if isinstance(body, bytes):
            return httpx2.Response(status, content=body)
        return httpx2.Response(status, json=body)

    def sync_handler(self, request: httpx2.Request) -> httpx2.Response:
        if self.delay:
            time.sleep(self.delay)
        return self._response(request)

    async def async_handler(self, request: httpx2.Request) -> httpx2.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        return self._response(request)

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.sync_handler)

    def async_transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.async_handler)


@contextmanager
def serve(broker: FakeBroker) -> Iterator[str]:
    """Serve ``broker`` over a real socket on 127.0.0.1; yield its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            content = self.rfile.read(length) if length else b""
            status, body = broker.answer(
                self.command, self.path, self.headers.get("authorization"), content
            )
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class TickingClock:
    """A clock for the SDK (anything with ``timestamp()``) that moves when told."""

    def __init__(self, at: float = NOW) -> None:
        self.at = at

    def timestamp(self) -> float:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += seconds
