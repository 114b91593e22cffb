"""Signed webhook notifications to apps (consent finished, grant failed).

The body is JSON. The ``Valetkey-Signature`` header is a short-lived JWT signed by the broker's
issuer (ES256, keys at ``/.well-known/jwks.json``) whose claims pin the receiving URL (``aud``)
and the body (``body_sha256``), so an app verifies it with public keys only and holds no
shared secret. Delivery runs in the background with retries and backoff; failures are logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from valetkey.identity.issuer import BrokerIssuer
from valetkey.netguard import OutboundRefused, check_outbound

log = logging.getLogger("valetkey.webhooks")

SIGNATURE_HEADER = "Valetkey-Signature"
RETRY_DELAYS = (0.5, 2.0, 8.0)


def body_digest(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()


class WebhookNotifier:
    def __init__(
        self, http: httpx.AsyncClient, issuer: BrokerIssuer, *, allow_private: bool
    ) -> None:
        self._http = http
        self._issuer = issuer
        self._allow_private = allow_private
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered: list[str] = []  # event types delivered, for operators' metrics and tests

    def notify(self, url: str, event: Mapping[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(url, dict(event)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def signed(self, url: str, event: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        signature = self._issuer.mint(
            {"body_sha256": body_digest(body), "event": str(event.get("type", ""))},
            audience=url,
            ttl_seconds=300,
        )
        return body, {"content-type": "application/json", SIGNATURE_HEADER: signature}

    async def _deliver(self, url: str, event: dict[str, Any]) -> None:
        try:
            await check_outbound(url, allow_private=self._allow_private)
        except OutboundRefused as exc:
            log.warning("webhook %s refused: %s", event.get("type"), exc)
            return
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            if delay:
                await asyncio.sleep(delay)
            body, headers = self.signed(url, event)
            try:
                response = await self._http.post(url, content=body, headers=headers, timeout=10)
            except httpx.HTTPError as exc:
                log.warning(
                    "webhook %s attempt %d failed: %s",
                    event.get("type"),
                    attempt + 1,
                    type(exc).__name__,
                )
                continue
            if response.status_code < 300:
                self.delivered.append(str(event.get("type")))
                return
            log.warning(
                "webhook %s attempt %d answered %d",
                event.get("type"),
                attempt + 1,
                response.status_code,
            )
        log.error(
            "webhook %s not delivered after %d attempts", event.get("type"), len(RETRY_DELAYS) + 1
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
