"""Key rotation: re-wrap every stored data key with the active key-encryption key."""

from __future__ import annotations

from dataclasses import dataclass

from valetkey.store.keys import KeyRepository


@dataclass(frozen=True, slots=True)
class Rewrapped:
    """How many records each kind had re-wrapped (and cache entries dropped as unreadable)."""

    connectors: int
    cached_tokens: int
    grants: int
    authorizations: int
    jobs: int
    dropped_cache_entries: int


class KeysService:
    """Operator work (the ``valetkey keys`` commands, run next to the data): no member, no role."""

    def __init__(self, store: KeyRepository) -> None:
        self._store = store

    async def rewrap_all(self, *, batch: int = 200) -> Rewrapped:
        """Re-wrap every data key with the key ring's active KEK. Safe while the broker serves."""
        counts = await self._store.rewrap_all(batch=batch)
        return Rewrapped(
            connectors=counts["connectors"],
            cached_tokens=counts["cachedTokens"],
            grants=counts["grants"],
            authorizations=counts["authorizations"],
            jobs=counts["jobs"],
            dropped_cache_entries=counts["droppedCacheEntries"],
        )

    async def kek_ids_in_use(self) -> set[str]:
        """The KEK ids some stored record is still wrapped with."""
        return await self._store.kek_ids_in_use()
