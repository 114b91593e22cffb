"""A bounded in-memory cache whose entries expire: for anything keyed on values a caller chooses.

Plain ``dict`` lookups on the hit path (no locks, no I/O); at most ``max_entries`` entries,
the oldest-inserted dropped first (an entry is re-inserted whenever it is reloaded, so a
busy key stays young); an entry past its ``until`` is a miss and is dropped when read.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from typing import Generic, TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: dict[K, tuple[V, datetime]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: datetime) -> V | None:
        """The value while the entry lives, else None (so values are never None themselves)."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[1] > now:
            return hit[0]
        del self._entries[key]
        return None

    def put(self, key: K, value: V, until: datetime) -> None:
        self._entries.pop(key, None)  # re-inserted: now the youngest
        self._entries[key] = (value, until)
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
