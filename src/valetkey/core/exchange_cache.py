"""The exchange's in-memory caches: connector views and minted tokens (DESIGN §3).

Both are bounded, since callers choose their keys: connector views (``max_views``, re-read
every ``VIEW_TTL``), unknown uids as negative entries (``max_unknown_views``, each for
``UNKNOWN_VIEW_TTL``, keyed by a digest so a long uid costs no memory), and tokens
(``max_tokens`` and ``max_bytes``). A view load runs once per key at a time (``MAX_LOADS``
loads in flight). Invalidations from the bus drop what they name; ``ExchangeService`` routes them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

from valetkey.core.cache import BoundedCache
from valetkey.core.flight import SingleFlight
from valetkey.core.ports import (
    CachedMint,
    ConnectorView,
    ExchangeStore,
    Invalidation,
    ProviderLookup,
)
from valetkey.core.providers import Capabilities, Provider
from valetkey.errors import BrokerUnavailable

#: Connector views are re-read at least this often even if an invalidation is missed.
VIEW_TTL = timedelta(seconds=30)
#: An unknown connector uid is answered from memory this long (creating the connector clears
#: it at once on every replica through the bus; this bounds a missed invalidation).
UNKNOWN_VIEW_TTL = timedelta(seconds=5)
#: Connector views kept (by uid and by id), and unknown uids remembered.
MAX_VIEWS = 10_000
MAX_UNKNOWN_VIEWS = 1_024
#: Bytes of tokens and their keys the token cache holds at most (estimated).
MAX_CACHED_TOKEN_BYTES = 64 * 1024 * 1024
#: Loads (token or connector view) in flight at once in one single-flight map.
MAX_LOADS = 10_000

#: (connector id, project id, environment, the request's cache key).
TokenKey = tuple[Any, ...]


class LoadedView:
    """A connector view as the exchange keeps it, with its provider and that provider's
    capabilities, resolved at first use and kept as long as the view: a provider parses the
    connector's settings once per view (re-read every ``VIEW_TTL``), not once per request."""

    __slots__ = ("_resolved", "view")

    def __init__(self, view: ConnectorView) -> None:
        self.view = view
        self._resolved: tuple[Provider, Capabilities] | None = None

    def resolve(self, providers: ProviderLookup) -> tuple[Provider, Capabilities]:
        """The provider and its capabilities; a lookup that fails is not kept (it raises again)."""
        if self._resolved is None:
            provider = providers.get(self.view.connector.type)
            self._resolved = (provider, provider.capabilities(self.view.connector))
        return self._resolved


class ViewCache:
    """Connector views by (team id, uid or id), and unknown uids by (team id, uid digest)."""

    def __init__(self, store: ExchangeStore, *, max_views: int, max_unknown_views: int) -> None:
        self._store = store
        self._views: BoundedCache[tuple[str, str], LoadedView] = BoundedCache(max_views)
        #: Unknown uids, keyed by (team id, SHA-256 of the uid).
        self._unknown: BoundedCache[tuple[str, bytes], bool] = BoundedCache(max_unknown_views)
        #: Bumped by every connector invalidation: a load that started before one stores nothing.
        self._generation = 0
        self._loads: SingleFlight[tuple[str, str], LoadedView | None] = SingleFlight(
            limit=MAX_LOADS, full=overloaded
        )

    @property
    def sizes(self) -> tuple[int, int]:
        """How many connector views, and how many unknown uids, the cache holds."""
        return len(self._views), len(self._unknown)

    async def get(self, team_id: str, uid: str, now: datetime) -> LoadedView | None:
        hit = self._views.get((team_id, uid), now)
        if hit is not None:
            return hit
        if self._unknown.get((team_id, _uid_digest(uid)), now):
            return None
        # One request reloads an expired view; the others arriving meanwhile wait for that load
        # (otherwise every in-flight request queried the store at once, every VIEW_TTL).
        return await self._loads.run((team_id, uid), lambda: self._load(team_id, uid, now))

    async def _load(self, team_id: str, uid: str, now: datetime) -> LoadedView | None:
        generation = self._generation
        view = await self._store.connector_view(team_id, uid)
        loaded = None if view is None else LoadedView(view)
        if generation != self._generation:
            return loaded  # invalidated while loading: serve it, but do not keep it
        if loaded is None:
            self._unknown.put((team_id, _uid_digest(uid)), True, now + UNKNOWN_VIEW_TTL)
        else:
            self._views.put((team_id, uid), loaded, now + VIEW_TTL)
        return loaded

    def invalidate(self, inv: Invalidation) -> None:
        """Drop the view a connector invalidation names (or every view, when it names none)."""
        self._generation += 1
        if inv.team_id is not None and inv.uid is not None:
            for name in (inv.uid, inv.connector_id):  # the same view, addressed by id
                if name is not None:
                    self._views.pop((inv.team_id, name))
                    self._unknown.pop((inv.team_id, _uid_digest(name)))
        else:
            self._views.clear()
            self._unknown.clear()


class TokenCache:
    """Minted tokens by ``TokenKey``, bounded by count and by (estimated) bytes, oldest dropped first."""

    def __init__(self, *, max_tokens: int, max_bytes: int) -> None:
        self._max_tokens = max_tokens
        self._max_bytes = max_bytes
        self._tokens: OrderedDict[TokenKey, CachedMint] = OrderedDict()
        self._sizes: dict[TokenKey, int] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._tokens)

    def get(self, key: TokenKey) -> CachedMint | None:
        return self._tokens.get(key)

    def put(self, key: TokenKey, entry: CachedMint) -> None:
        self.forget(key)
        size = len(repr(key)) + len(entry.token.token) + 256  # an estimate, with overhead
        self._tokens[key] = entry
        self._sizes[key] = size
        self._bytes += size
        while self._tokens and (
            len(self._tokens) > self._max_tokens or self._bytes > self._max_bytes
        ):
            self.forget(next(iter(self._tokens)))

    def forget(self, key: TokenKey) -> None:
        if self._tokens.pop(key, None) is not None:
            self._bytes -= self._sizes.pop(key, 0)

    def drop(self, connector_id: str | None, subject_key: str | None) -> None:
        """Forget a connector's tokens (all connectors' when None), or one subject's of them."""
        for key in list(self._tokens):
            if connector_id is not None and key[0] != connector_id:
                continue
            if subject_key is not None and key[3][0] != subject_key:
                continue
            self.forget(key)

    def clear(self) -> None:
        self._tokens.clear()
        self._sizes.clear()
        self._bytes = 0


def overloaded() -> BrokerUnavailable:
    return BrokerUnavailable(
        "the broker has too many loads in flight; retry shortly", retryAfterSeconds=1
    )


def _uid_digest(uid: str) -> bytes:
    return hashlib.sha256(uid.encode("utf-8", "surrogatepass")).digest()
