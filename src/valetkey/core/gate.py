"""Per-connector limits on provider calls: how many at once, how long to wait, how long each may take.

Every call the broker makes to a connector's provider (mint, refresh, exchange, revoke,
consent) goes through :meth:`ProviderGate.call`. A connector has ``concurrency`` slots; a call
that finds them taken waits at most ``wait_seconds`` (and at most ``max_waiting`` calls wait
at once), then is refused with ``provider_busy`` (503, ``Retry-After``). A call that holds a
slot is cancelled after ``timeout_seconds`` and refused with ``provider_timeout`` (504).

So a provider that hangs holds at most ``concurrency`` of the shared outbound connections,
for at most ``timeout_seconds`` each, whatever the requests look like: single flight collapses
identical requests, and the slots bound the distinct ones (other scopes, resources, audiences).
Other connectors' calls and every cache hit go on as usual.

The per-connector slot records are kept in a bounded map: idle ones (no call holding or
waiting) are dropped, oldest first, once there are more than ``max_connectors``.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from valetkey.errors import ProviderBusy, ProviderTimeout

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT_SECONDS",
    "DEFAULT_WAIT_SECONDS",
    "ProviderGate",
]

T = TypeVar("T")

#: Provider calls in flight at once for one connector.
DEFAULT_CONCURRENCY = 8
#: Longest wait for a free slot before ``provider_busy``.
DEFAULT_WAIT_SECONDS = 1.0
#: Longest one provider call may take (discovery and token request together) before
#: ``provider_timeout``; below the SDK's 10-second request timeout.
DEFAULT_TIMEOUT_SECONDS = 8.0
#: Connectors whose slot records are kept while idle.
DEFAULT_MAX_CONNECTORS = 10_000


@dataclass(slots=True)
class _Slots:
    semaphore: asyncio.Semaphore
    #: Calls holding a slot or waiting for one; an entry with none may be dropped.
    users: int = 0
    waiting: int = 0
    in_flight: int = 0


class ProviderGate:
    """Bounds provider calls per connector: a slot to run, a bounded wait for one, a deadline."""

    def __init__(
        self,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_waiting: int | None = None,
        max_connectors: int = DEFAULT_MAX_CONNECTORS,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if wait_seconds < 0 or timeout_seconds <= 0:
            raise ValueError("wait_seconds must be >= 0 and timeout_seconds > 0")
        self.concurrency = concurrency
        self.wait_seconds = wait_seconds
        self.timeout_seconds = timeout_seconds
        #: Calls that may wait for a slot at once; beyond that a call is refused at once.
        self.max_waiting = 4 * concurrency if max_waiting is None else max_waiting
        self.max_connectors = max_connectors
        self._slots: OrderedDict[str, _Slots] = OrderedDict()

    @property
    def hold_seconds(self) -> float:
        """The longest a call can last from asking for a slot to its end (wait plus deadline)."""
        return self.wait_seconds + self.timeout_seconds

    def in_flight(self, connector_id: str) -> int:
        """How many calls to this connector's provider hold a slot now."""
        slots = self._slots.get(connector_id)
        return 0 if slots is None else slots.in_flight

    def __len__(self) -> int:
        return len(self._slots)

    async def call(self, connector_id: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` in one of the connector's slots, within the deadline; or refuse."""
        slots = self._slots_for(connector_id)
        slots.users += 1
        try:
            await self._acquire(slots)
            slots.in_flight += 1
            try:
                deadline = asyncio.timeout(self.timeout_seconds)
                try:
                    async with deadline:
                        return await call()
                except TimeoutError:
                    if deadline.expired():
                        raise ProviderTimeout(
                            f"the provider did not answer within {self.timeout_seconds:g} s",
                            error="timeout",
                            timeoutSeconds=self.timeout_seconds,
                        ) from None
                    raise
            finally:
                slots.in_flight -= 1
                slots.semaphore.release()
        finally:
            slots.users -= 1

    async def _acquire(self, slots: _Slots) -> None:
        if not slots.semaphore.locked():
            await slots.semaphore.acquire()  # a free slot: taken without waiting
            return
        if slots.waiting >= self.max_waiting or self.wait_seconds <= 0:
            raise self._busy()
        slots.waiting += 1
        try:
            async with asyncio.timeout(self.wait_seconds):
                await slots.semaphore.acquire()
        except TimeoutError:
            raise self._busy() from None
        finally:
            slots.waiting -= 1

    def _busy(self) -> ProviderBusy:
        return ProviderBusy(
            f"this connector already has {self.concurrency} provider calls in flight; retry shortly",
            retryAfterSeconds=max(1, math.ceil(self.wait_seconds)),
            concurrency=self.concurrency,
        )

    def _slots_for(self, connector_id: str) -> _Slots:
        slots = self._slots.get(connector_id)
        if slots is not None:
            self._slots.move_to_end(connector_id)
            return slots
        slots = _Slots(asyncio.Semaphore(self.concurrency))
        self._slots[connector_id] = slots
        if len(self._slots) > self.max_connectors:
            for key in [k for k, s in self._slots.items() if s.users == 0 and k != connector_id]:
                del self._slots[key]
                if len(self._slots) <= self.max_connectors:
                    break
        return slots
