"""Profile the cache-hit exchange in process, by layer: no sockets, no load generator.

    .venv/bin/python bench/profile_exchange.py [--requests 20000] [--top 40] [--path exchange|healthz]

Builds the broker's ASGI app on a temporary SQLite data directory, runs its lifespan, creates a
project with an api-key connector through the management API, warms the token cache, then
calls the app ``--requests`` times with one pre-built ASGI scope (the way uvicorn calls it) under
cProfile. Prints the microseconds per request of the whole call, then a per-layer split
(cumulative time inside each layer's entry point, per request) and cProfile's top functions by
own time. What the server (uvicorn, its parser, the event loop's socket work) costs is not in
here: ``bench_exchange.py`` measures it against the bare endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2

from valetkey.server.app import create_app
from valetkey.server.settings import Settings

EXCHANGE_PATH = "/v1/connect/token/api-key%2Fbench"
BODY = b'{"subject":{"type":"app"}}'

#: (label, file fragment, function name): the entry point of each layer, outermost first.
LAYERS = (
    ("ASGI app (everything below)", "fastapi/applications.py", "__call__"),
    ("BodyLimit middleware", "valetkey/server/app.py", "__call__"),
    ("Starlette router (matching)", "starlette/routing.py", "app"),
    ("route handler (DirectRoute)", "valetkey/server/connect.py", "handler"),
    ("identity verification", "valetkey/identity/verifier.py", "verify"),
    ("token request parsing", "valetkey/server/wire.py", "parse_token_request"),
    ("exchange (core)", "valetkey/core/exchange.py", "exchange"),
    ("audit record (hash chain)", "valetkey/core/exchange.py", "_record"),
    ("response body + JSON", "valetkey/server/connect.py", "json_response"),
    ("response send", "starlette/responses.py", "__call__"),
)


async def _run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="valetkey-profile-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", port=8787)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            owner = json.loads(settings.cli_credentials_path.read_text())["token"]
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://bench") as c:
                auth = {"authorization": f"Bearer {owner}"}
                for method, url, body in (
                    ("POST", "/v1/projects", {"slug": "bench"}),
                    ("POST", "/v1/connectors", {"service": "api-key", "name": "bench", "data": {"apiKey": "sk-x"}}),
                    ("POST", "/v1/connectors/api-key/bench/links",
                     {"project": "bench", "environments": ["development"]}),
                ):
                    r = await c.request(method, url, json=body, headers=auth)
                    r.raise_for_status()
                r = await c.post("/v1/projects/bench/development-identity", json={}, headers=auth)
                identity = r.json()["token"]
                if args.identity == "access-token":
                    r = await c.post(
                        "/v1/projects/bench/access-tokens", json={"environment": "development"}, headers=auth
                    )
                    identity = r.json()["token"]
            get = args.path == "healthz"
            scope: dict[str, Any] = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "GET" if get else "POST", "scheme": "http",
                "path": "/healthz" if get else "/v1/connect/token/api-key/bench",
                "raw_path": b"/healthz" if get else EXCHANGE_PATH.encode(), "root_path": "", "query_string": b"",
                "headers": [
                    (b"host", b"127.0.0.1:8787"), (b"authorization", f"Bearer {identity}".encode()),
                    (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
                ],
                "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8787), "state": {},
            }
            statuses: list[int] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"" if get else BODY, "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            async def one() -> None:
                await app(dict(scope), receive, send)

            for _ in range(2000):  # warm: caches, the view, the audit writer's first batches
                await one()
            t0 = time.perf_counter()
            for _ in range(args.requests):
                await one()
            plain = (time.perf_counter() - t0) / args.requests * 1e6
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.requests):
                await one()
            profiler.disable()
            if set(statuses) != {200}:
                raise RuntimeError(f"unexpected statuses {sorted(set(statuses))}")
    print(f"{args.path} ({args.identity} identity): {plain:.1f} us per request in process, unprofiled "
          f"({args.requests:,} requests; the audit writer runs in between)")
    stats = pstats.Stats(profiler)
    table: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
    total = None
    print(f"\n{'layer (cumulative, profiled)':<40}{'us/req':>8}{'share':>8}")
    for label, fragment, name in LAYERS:
        cum = sum(v[3] for (f, _line, fn), v in table.items() if fragment in f and fn == name)
        if total is None:
            total = cum or 1.0
        print(f"{label:<40}{cum / args.requests * 1e6:>8.1f}{100 * cum / total:>7.0f}%")
    print()
    stats.sort_stats("tottime").print_stats(args.top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--path", choices=("exchange", "healthz"), default="exchange")
    parser.add_argument("--identity", choices=("oidc", "access-token"), default="oidc")
    args = parser.parse_args(argv)
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
