"""Cross-replica cache invalidation over PostgreSQL ``LISTEN/NOTIFY``.

Every replica listens on one channel on a dedicated connection. ``publish`` sends a
``NOTIFY`` (delivered to every listener, this replica included) and also applies the
invalidation locally at once, so the replica that made a change never serves the old
value. If the listening connection drops, the replica clears every cache it has (it
may have missed notifications) and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine.url import make_url

from valetkey.core.ports import Invalidation, InvalidationHandler
from valetkey.store.db import Database

log = logging.getLogger("valetkey.bus")

CHANNEL = "valetkey_invalidate"
#: Sent to handlers when notifications may have been missed: drop everything.
EVERYTHING = (
    Invalidation(kind="connector"),
    Invalidation(kind="tokens"),
    Invalidation(kind="identity"),
)


def decode(payload: str) -> Invalidation | None:
    try:
        data = json.loads(payload)
        return Invalidation(
            kind=data["kind"],
            team_id=data.get("team_id"),
            uid=data.get("uid"),
            connector_id=data.get("connector_id"),
            subject_key=data.get("subject_key"),
            token_hash=data.get("token_hash"),
        )
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring a malformed invalidation notification")
        return None


class PostgresBus:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._handlers: list[InvalidationHandler] = []
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._connected = asyncio.Event()

    def subscribe(self, handler: InvalidationHandler) -> None:
        self._handlers.append(handler)

    def _deliver(self, inv: Invalidation) -> None:
        for handler in self._handlers:
            try:
                handler(inv)
            except Exception:
                log.exception("invalidation handler failed")

    async def publish(self, invalidation: Invalidation) -> None:
        self._deliver(invalidation)
        async with self._db.engine.begin() as conn:
            await conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": CHANNEL, "payload": json.dumps(invalidation.to_json())},
            )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="valetkey-invalidation-listener")
        await asyncio.wait_for(self._connected.wait(), 10)

    async def _run(self) -> None:
        url = make_url(self._db.url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not self._closed:
            try:
                self._conn = await asyncpg.connect(dsn)
                lost = asyncio.Event()
                self._conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await self._conn.add_listener(CHANNEL, self._on_notify)
                if self._connected.is_set():  # a reconnect: we may have missed notifications
                    for inv in EVERYTHING:
                        self._deliver(inv)
                self._connected.set()
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "invalidation listener lost its connection; reconnecting", exc_info=True
                )
            finally:
                if self._conn is not None and not self._conn.is_closed():
                    with contextlib.suppress(Exception):
                        await self._conn.close()
                self._conn = None
            for inv in EVERYTHING:
                self._deliver(inv)
            await asyncio.sleep(1)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        inv = decode(payload)
        if inv is not None:
            self._deliver(inv)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
