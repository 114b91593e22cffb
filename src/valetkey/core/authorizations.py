"""A consent in progress: the record the consent service keeps between start and grant."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from valetkey.core.models import Subject
from valetkey.core.providers import TokenSet

__all__ = ["Mode", "PendingAuthorization", "Status"]

Mode = Literal["callback", "webhook", "device"]
Status = Literal["pending", "exchanging", "confirming", "completed", "failed", "denied", "expired"]


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """One authorization request, from start to grant (or its end). Secret state is stored encrypted."""

    id: str
    team_id: str
    connector_id: str
    project_id: str
    environment: str
    user_id: str
    mode: Mode
    status: Status
    verifier_hash: str
    scopes: tuple[str, ...] | None
    return_url: str | None
    webhook_url: str | None
    expires_at: datetime
    created_at: datetime
    #: Secret working state, stored encrypted.
    code_verifier: str | None = field(default=None, repr=False)
    nonce: str | None = field(default=None, repr=False)
    device_code: str | None = field(default=None, repr=False)
    provider_url: str | None = None  # the provider's authorization URL (broker device page)
    user_code: str | None = None
    interval: int = 5
    next_poll_at: datetime | None = None
    tokens: TokenSet | None = None  # awaiting confirmation
    error: str | None = None
    #: Whether browser consent waits for the app's confirm call (the link's policy at start).
    confirm: bool = True
    #: Who issued ``user_id`` (None: the app's own users). The grant is for (issuer, id).
    user_issuer: str | None = None

    @property
    def subject(self) -> Subject:
        return Subject("user", self.user_id, self.user_issuer)
