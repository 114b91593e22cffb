"""Single flight: concurrent callers asking for the same key share one load.

The load runs as a task of its own, so a caller that goes away (a client disconnecting)
does not cancel it for the others; its outcome, value or error, reaches every caller.

Keys may be chosen by callers (a token request's scopes, a connector uid), so the number of
loads in flight at once is bounded by ``limit``: a caller with a new key beyond it gets the
error ``full()`` builds, without a load.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(
        self, *, limit: int | None = None, full: Callable[[], Exception] | None = None
    ) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}
        self._limit = limit
        self._full = full or (lambda: RuntimeError("too many loads in flight"))

    def __len__(self) -> int:
        return len(self._inflight)

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        task = self._inflight.get(key)
        if task is None:
            if self._limit is not None and len(self._inflight) >= self._limit:
                raise self._full()
            task = asyncio.get_running_loop().create_task(_await(load))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        return await asyncio.shield(task)

    def _forget(self, key: K, done: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # retrieved here: every caller re-raises it from its own await


async def _await(load: Callable[[], Awaitable[V]]) -> V:
    return await load()
