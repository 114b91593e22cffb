"""Signed webhook notifications to apps (consent finished, grant failed), delivered by the job queue.

The body is JSON. The ``Valetkey-Signature`` header is a short-lived JWT signed by the broker's
issuer (ES256, keys at ``/.well-known/jwks.json``) whose claims pin the receiving URL (``aud``)
and the body (``body_sha256``), so an app verifies it with public keys only and holds no
shared secret.

``notify`` stores a ``webhook`` job (``valetkey.core.jobs``); a worker on any replica delivers
it with retries, exponential backoff and jitter, and dead-letters it when its attempts run out.
Each attempt of one job carries the same delivery id, the job's id, in the
``Valetkey-Delivery`` header and in the signed ``delivery`` claim: a receiver that has seen
that id already acknowledges it and does nothing (a delivery is at least once; it is twice only
when a broker died between the receiver's answer and recording it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx2

from valetkey.core.jobs import Job, JobFailed, JobQueue, PermanentFailure
from valetkey.identity.issuer import BrokerIssuer
from valetkey.netguard import OutboundRefused, check_outbound

log = logging.getLogger("valetkey.webhooks")

SIGNATURE_HEADER = "Valetkey-Signature"
DELIVERY_HEADER = "Valetkey-Delivery"
#: The job kind of a webhook delivery.
WEBHOOK_JOB = "webhook"
#: Seconds one delivery attempt may take (the job's timeout is longer).
ATTEMPT_TIMEOUT = 10.0


def body_digest(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()


class WebhookNotifier:
    def __init__(
        self,
        http: httpx2.AsyncClient,
        issuer: BrokerIssuer,
        *,
        allow_private: bool,
        queue: JobQueue,
    ) -> None:
        self._http = http
        self._issuer = issuer
        self._allow_private = allow_private
        self._queue = queue
        self.delivered: list[str] = []  # event types delivered by this process, for tests

    async def notify(
        self,
        url: str,
        event: Mapping[str, Any],
        *,
        team_id: str,
        dedupe_key: str | None = None,
    ) -> None:
        await self._queue.enqueue(
            WEBHOOK_JOB, {"url": url, "event": dict(event)}, team_id=team_id, dedupe_key=dedupe_key
        )

    def signed(
        self, url: str, event: Mapping[str, Any], *, delivery: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        claims = {"body_sha256": body_digest(body), "event": str(event.get("type", ""))}
        headers = {"content-type": "application/json"}
        if delivery is not None:
            claims["delivery"] = delivery
            headers[DELIVERY_HEADER] = delivery
        signature = self._issuer.mint(claims, audience=url, ttl_seconds=300)
        return body, {**headers, SIGNATURE_HEADER: signature}

    async def deliver(self, job: Job) -> None:
        """The ``webhook`` job's handler: one attempt; raises ``JobFailed`` to be retried."""
        url = str(job.payload["url"])
        event: dict[str, Any] = dict(job.payload["event"])
        kind = event.get("type")
        try:
            await check_outbound(url, allow_private=self._allow_private)
        except OutboundRefused as exc:
            raise PermanentFailure(f"refused by the network policy: {exc}") from exc
        body, headers = self.signed(url, event, delivery=job.id)
        try:
            response = await self._http.post(
                url, content=body, headers=headers, timeout=ATTEMPT_TIMEOUT
            )
        except httpx2.HTTPError as exc:
            raise JobFailed(f"webhook {kind}: {type(exc).__name__}") from exc
        if response.status_code >= 300:
            raise JobFailed(f"webhook {kind}: answered {response.status_code}")
        self.delivered.append(str(kind))

    async def close(self) -> None:
        """Nothing to stop: undelivered events wait in the job queue."""
