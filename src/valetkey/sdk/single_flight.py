"""Merge concurrent identical requests into one broker call.

Threads wait on an event; tasks await a shared task. The fetch itself runs as its
own task, so cancelling one caller never cancels the fetch the others wait for.
A failure reaches every caller that was waiting and is not remembered: the next
call starts a new fetch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

__all__ = ["AsyncSingleFlight", "SyncSingleFlight"]

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("done", "error", "retry", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: Exception | None = None
        self.retry = False


class SyncSingleFlight(Generic[T]):
    """Thread-based: the first caller for a key loads; the others block until it is done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call[T]] = {}

    def run(self, key: Hashable, read: Callable[[], T | None], load: Callable[[], T]) -> T:
        """Return ``read()`` if it has a value, else one shared ``load()`` per key."""
        while True:
            with self._lock:
                call = self._calls.get(key)
                leader = call is None
                if call is None:
                    call = _Call()
                    self._calls[key] = call
            if leader:
                return self._lead(key, call, read, load)
            call.done.wait()
            if call.error is not None:
                raise call.error
            if not call.retry:
                return call.value  # type: ignore[return-value]

    def _lead(
        self, key: Hashable, call: _Call[T], read: Callable[[], T | None], load: Callable[[], T]
    ) -> T:
        try:
            # The previous leader may have filled the cache while this caller waited.
            value = read()
            if value is None:
                value = load()
        except Exception as exc:
            call.error = exc
            raise
        except BaseException:
            # KeyboardInterrupt and friends belong to this thread only; the others retry.
            call.retry = True
            raise
        else:
            call.value = value
            return value
        finally:
            with self._lock:
                self._calls.pop(key, None)
            call.done.set()

    def __len__(self) -> int:
        """How many keys are being loaded right now."""
        return len(self._calls)


class AsyncSingleFlight(Generic[T]):
    """Task-based: every caller for a key awaits the same fetch task."""

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[T]] = {}

    async def run(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """Await the fetch in flight for ``key``, starting one if there is none."""
        loop = asyncio.get_running_loop()
        task = self._tasks.get(key)
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(_await(load))
            self._tasks[key] = task
            task.add_done_callback(partial(self._finished, key))
        return await asyncio.shield(task)

    def _finished(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: nobody may be left awaiting it

    def __len__(self) -> int:
        """How many keys are being loaded right now."""
        return len(self._tasks)


async def _await(load: Callable[[], Awaitable[T]]) -> T:
    return await load()
