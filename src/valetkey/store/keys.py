"""The key-rotation repository: every encrypted column, re-wrapped under the active KEK."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select

from valetkey.crypto import DecryptionError, KeyRing
from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.repo import cache_aad, secrets_aad


class KeyRepository:
    def __init__(self, db: Database, keyring: KeyRing) -> None:
        self.db = db
        self.keyring = keyring

    def _encrypted_columns(self) -> Iterator[tuple[Any, str, str, Callable[[str], bytes], str]]:
        from valetkey.store.consent import authorization_aad
        from valetkey.store.grants import grant_aad
        from valetkey.store.jobs import job_aad

        yield (t.Connector, "secrets", "id", secrets_aad, "connectors")
        yield (t.CachedToken, "payload", "key_hash", cache_aad, "cachedTokens")
        yield (t.Grant, "payload", "id", grant_aad, "grants")
        yield (t.Authorization, "payload", "id", authorization_aad, "authorizations")
        yield (t.Job, "payload", "id", job_aad, "jobs")

    async def rewrap_all(self, *, batch: int = 200) -> dict[str, int]:
        """Re-wrap every data key with the key ring's active KEK, in batches. Safe while the
        broker serves.

        A cached token whose key is gone is only a cache: it is dropped, not fatal. Any other
        unreadable record stops the rotation with an error naming it.
        """
        active = self.keyring.active_id
        counts = {
            "connectors": 0,
            "cachedTokens": 0,
            "grants": 0,
            "authorizations": 0,
            "jobs": 0,
            "droppedCacheEntries": 0,
        }
        for table, column, key, aad, label in self._encrypted_columns():
            last = ""
            while True:
                async with self.db.session.begin() as s:
                    pk = getattr(table, key)
                    rows = (
                        await s.scalars(
                            select(table)
                            .where(pk > last)
                            .order_by(pk)
                            .limit(batch)
                            .with_for_update()
                        )
                    ).all()
                    for row in rows:
                        blob = getattr(row, column)
                        if self.keyring.kek_id_of(blob) == active:
                            continue
                        try:
                            setattr(
                                row, column, self.keyring.rewrap(blob, aad=aad(getattr(row, key)))
                            )
                        except DecryptionError:
                            if table is not t.CachedToken:
                                raise
                            await s.delete(row)
                            counts["droppedCacheEntries"] += 1
                            continue
                        counts[label] += 1
                if not rows:
                    break
                last = getattr(rows[-1], key)
        return counts

    async def kek_ids_in_use(self) -> set[str]:
        used: set[str] = set()
        async with self.db.session() as s:
            for table, column, _key, _aad, _label in self._encrypted_columns():
                for blob in (await s.scalars(select(getattr(table, column)))).all():
                    used.add(self.keyring.kek_id_of(blob))
        return used
