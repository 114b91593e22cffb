"""A scripted HTTP server on 127.0.0.1 for what a real provider will not do on demand.

Real peers (``oidc.py``) answer correctly; tests of how Valetkey copes with a provider
that misbehaves (widens scopes, answers HTML, stalls, floods) need a server told exactly
what to answer. It is a real socket server, so the client's whole HTTP stack runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

__all__ = ["Recorded", "Reply", "ScriptedServer", "scripted_server"]


@dataclass
class Reply:
    """What to answer on one path."""

    status: int = 200
    json_body: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering.
    delay: float = 0.0
    #: Send the body chunked (no Content-Length).
    chunked: bool = False


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True)


class ScriptedServer:
    """Answers each path as scripted with :meth:`reply`; records every request."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply | Callable[[Recorded], Reply]] = {}
        self.requests: list[Recorded] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self._answer()

            def do_GET(self) -> None:
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                recorded = Recorded(self.command, self.path, dict(self.headers.items()), body)
                server.requests.append(recorded)
                reply = server.replies.get(self.path, Reply(status=404, json_body={}))
                if callable(reply):
                    reply = reply(recorded)
                time.sleep(reply.delay)
                payload = reply.body
                if payload is None:
                    payload = json.dumps(reply.json_body).encode()
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                if reply.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    step = 8192
                    for start in range(0, len(payload), step):
                        chunk = payload[start : start + step]
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (timeout tests) is expected

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def reply(self, path: str, reply: Reply | Callable[[Recorded], Reply]) -> None:
        """Answer ``path`` with ``reply``, or with what ``reply`` makes of each request."""
        self.replies[path] = reply

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    """A fresh scripted server per test."""
    server = ScriptedServer()
    try:
        yield server
    finally:
        server.close()
