"""The bare baseline: one Starlette endpoint on uvicorn's best configuration, one process.

    python bench/bare_app.py PORT

``POST /token`` reads the request body and answers a JSON body of the exchange's size, with no
middleware, routing beyond Starlette's, validation or I/O: what the server stack itself costs.
uvicorn runs with ``uvloop`` and ``httptools`` (the benchmark refuses to start without them, so
the baseline is never the slower stack by accident), access log off, one worker.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_BODY = (
    b'{"token":"sk-bench-0123456789abcdef","expiresAt":1893456000000,"tokenId":"tok_0123456789abcdef",'
    b'"connector":{"id":"con_0123456789abcdef","uid":"api-key/bench","type":"api-key","name":"bench",'
    b'"service":"api-key"},"metadata":{"expires":false}}'
)


async def token(request: Request) -> Response:
    await request.body()
    return Response(_BODY, media_type="application/json")


async def ready(_request: Request) -> Response:
    return Response(b"ok", media_type="text/plain")


app = Starlette(routes=[Route("/token", token, methods=["POST"]), Route("/readyz", ready)])


def main() -> None:
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
        log_level="warning", access_log=False, server_header=False, lifespan="off",
    )


if __name__ == "__main__":
    main()
