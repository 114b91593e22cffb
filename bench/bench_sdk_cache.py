"""How much a cached ``Client.get_token`` costs, against a bare dict lookup timed in the same run.

    .venv/bin/python bench/bench_sdk_cache.py [--calls 200000] [--repeat 5]

The broker is an ``httpx2.MockTransport`` answered once; every timed call is a cache
hit. Prints microseconds per call (best of ``--repeat`` runs) and the ratio to the
baseline. Target: a hit costs at most 5 us.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import httpx2

from valetkey.sdk.client import Client

TARGET_US = 5.0


def _answer(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(
        200,
        json={
            "token": "bench-token",
            "expiresAt": int((time.time() + 86400) * 1000),
            "tokenId": "tid",
            "connector": {"id": "con", "uid": "slack/mybot", "type": "api-key"},
        },
    )


def _best_us(fn: Callable[[], object], calls: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    table = {("slack/mybot", "app"): "bench-token"}
    key = ("slack/mybot", "app")
    baseline = _best_us(lambda: table.get(key), args.calls, args.repeat)

    with Client(identity="bench-identity", transport=httpx2.MockTransport(_answer)) as client:
        client.get_token("slack/mybot")
        client.get_token("slack/mybot", user="alice", scopes=["chat:write", "channels:read"])
        cases = {
            "get_token(uid)": lambda: client.get_token("slack/mybot"),
            "get_token(uid, user, scopes)": lambda: client.get_token(
                "slack/mybot", user="alice", scopes=["channels:read", "chat:write"]
            ),
        }
        results = {name: _best_us(fn, args.calls, args.repeat) for name, fn in cases.items()}

    print(f"baseline dict.get:              {baseline:8.3f} us/call")
    for name, us in results.items():
        verdict = "ok" if us <= TARGET_US else f"OVER the {TARGET_US} us target"
        print(f"{name:31} {us:8.3f} us/call  x{us / baseline:6.1f} baseline  {verdict}")


if __name__ == "__main__":
    main()
