"""The SDK's token cache: bounded LRU, keyed on caller identity and the normalized request.

A key is a plain tuple (cheap to build and hash on the hot path)::

    (base_url, sha256(identity), uid, subject_key, scopes, installation_id, resources, audience)

where ``scopes`` and ``resources`` are sorted, de-duplicated tuples (or None; scopes
``["*"]`` is None), so the order in which a caller lists them does not matter.

Reads take no lock: a hit is one dict lookup, one comparison and an LRU touch.
Writes and evictions take a lock. Every eviction bumps a per-uid generation, and a
load that began before it is not stored, so a revoke racing a fetch cannot put a
revoked token back.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from valetkey.errors import InvalidRequest
from valetkey.sdk.types import TokenResponse

__all__ = ["DEFAULT_MAX_SIZE", "CacheKey", "TokenCache", "normalize_scopes", "normalize_strings"]

DEFAULT_MAX_SIZE = 1024

CacheKey = tuple[
    str,  # base url
    str,  # sha256 of the identity
    str,  # connector uid (as the caller named it)
    str,  # subject key: "app", "user:<id>", ...
    tuple[str, ...] | None,  # scopes
    str | None,  # installation id
    tuple[str, ...] | None,  # resources
    str | None,  # audience
]


def normalize_strings(values: str | Iterable[str], what: str) -> tuple[str, ...]:
    """Sort and de-duplicate a list of strings; a bare string is a list of one."""
    if isinstance(values, str):
        return (values,)
    try:
        items = set(values)
    except TypeError as exc:
        raise InvalidRequest(f"{what} must be a list of strings", field=what) from exc
    for item in items:
        if not isinstance(item, str) or not item:
            raise InvalidRequest(f"{what} must be a list of non-empty strings", field=what)
    return tuple(sorted(items))


def normalize_scopes(scopes: str | Iterable[str]) -> tuple[str, ...] | None:
    """Scopes as a sorted, de-duplicated tuple; a string is split on spaces; ``["*"]`` is None."""
    normalized = normalize_strings(scopes.split() if isinstance(scopes, str) else scopes, "scopes")
    return None if normalized == ("*",) else normalized


class TokenCache:
    """An LRU map from request keys to token responses that are still valid."""

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        if max_size < 1:
            raise InvalidRequest("the cache size must be at least 1", field="cache_size")
        self._max_size = max_size
        self._entries: OrderedDict[CacheKey, tuple[float, TokenResponse]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._clears = 0
        self._lock = threading.Lock()

    def get(self, key: CacheKey, now: float, buffer: float) -> TokenResponse | None:
        """The cached response if it stays valid more than ``buffer`` seconds after ``now``."""
        entry = self._entries.get(key)
        if entry is None or entry[0] - now <= buffer:
            return None
        # try/except, not contextlib.suppress: this is the hot path, and suppress costs ~10x.
        try:  # noqa: SIM105
            self._entries.move_to_end(key)
        except KeyError:  # evicted by another thread just now
            pass
        return entry[1]

    def generation(self, uid: str) -> tuple[int, int]:
        """The eviction generation of ``uid``; pass it to :meth:`put` after the load."""
        return (self._clears, self._generations.get(uid, 0))

    def put(
        self, key: CacheKey, response: TokenResponse, expires: float, generation: tuple[int, int]
    ) -> bool:
        """Store a response unless ``key``'s uid was evicted since ``generation`` was read."""
        with self._lock:
            if self.generation(key[2]) != generation:
                return False
            self._entries[key] = (expires, response)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_size:
                self._entries.popitem(last=False)
            return True

    def delete(self, key: CacheKey) -> None:
        """Drop one entry, if present."""
        with self._lock:
            self._entries.pop(key, None)

    def evict(self, uid: str, subject_key: str | None) -> int:
        """Drop the entries of one connector: one subject's, or (``None``) every subject's.

        Every caller identity's copy goes: a revoked grant is revoked for all of them.
        ``uid`` matches the name a request used, and the uid or id the broker answered
        with, so an entry requested by id is evicted by a revoke naming the uid.
        """
        with self._lock:
            doomed = [
                key
                for key, (_, response) in self._entries.items()
                if uid in (key[2], response.connector.uid, response.connector.id)
                and (subject_key is None or key[3] == subject_key)
            ]
            for key in doomed:
                del self._entries[key]
            names = {uid}
            for key in doomed:
                names.add(key[2])
            for name in names:
                self._generations[name] = self._generations.get(name, 0) + 1
            return len(doomed)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
            self._clears += 1

    def __len__(self) -> int:
        return len(self._entries)
