"""The SDK's value types: subjects in, frozen dataclasses out. No third-party imports."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias

from valetkey.errors import InvalidRequest

__all__ = [
    "AuthorizationResponse",
    "Confirmation",
    "ConnectorMetadata",
    "ConnectorRef",
    "RevokeResult",
    "Subject",
    "SubjectLike",
    "TokenResponse",
]


@dataclass(frozen=True, slots=True)
class Subject:
    """On whose authority a token acts: ``Subject("app")``, ``Subject("user", "alice")``.

    A user from an identity provider other than the app's own is ``Subject.user("alice",
    issuer="https://idp.example")``: the same id under another issuer (or none) is another user,
    with its own grant. The broker's link must accept the issuer.
    """

    type: str
    id: str | None = None
    issuer: str | None = None

    @classmethod
    def app(cls) -> Subject:
        return cls("app")

    @classmethod
    def user(cls, user_id: str, *, issuer: str | None = None) -> Subject:
        return cls("user", user_id, issuer)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": self.type}
        if self.id is not None:
            wire["id"] = self.id
        if self.issuer is not None:
            wire["issuer"] = self.issuer
        return wire


#: What the SDK accepts wherever a subject is named.
SubjectLike: TypeAlias = Literal["app"] | Subject | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ConnectorRef:
    """The connector that issued a token: its opaque id and its ``service/name`` uid."""

    id: str
    uid: str
    type: str
    name: str | None = None
    service: str | None = None


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """A provider credential handed out by the broker. ``expires_at`` None: it does not expire."""

    token: str = field(repr=False)
    expires_at: datetime | None
    token_id: str | None
    connector: ConnectorRef
    installation_id: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AuthorizationResponse:
    """A started user authorization: send the user to ``url`` (or show the device code)."""

    url: str
    request: str
    verifier: str = field(repr=False)
    device_code: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    connector: ConnectorRef | None = None
    #: Device flows: seconds to wait between get_token polls.
    interval: int | None = None


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A confirmed consent: the grant for ``user`` now exists."""

    request: str
    status: str
    user: str
    #: The user's issuer (None: the app's own users).
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class RevokeResult:
    """What a revocation did, as counted by the broker."""

    tokens_found: int
    deleted: int
    provider_revoked: int
    provider_skipped: int
    provider_failed: int
    #: Any further fields the broker sent (kept verbatim).
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConnectorMetadata:
    """A connector's public description: identity, non-secret configuration, capabilities."""

    id: str
    uid: str
    type: str
    name: str | None = None
    service: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    #: Top-level fields this SDK version does not model (kept verbatim).
    extra: Mapping[str, Any] = field(default_factory=dict)


APP_KEY = "app"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def subject_from(subject: SubjectLike | None, user: str | None) -> tuple[str, dict[str, Any]]:
    """Normalize the accepted subject forms to ``(cache subject key, wire form)``.

    The key is ``"app"``, ``"user:<id>"``, or for other shapes the type followed by
    canonical JSON in which any carried credential (``token``) is reduced to a digest.
    """
    if user is not None:
        if subject is not None:
            raise InvalidRequest("pass either subject= or user=, not both", field="subject")
        if not isinstance(user, str) or not user:
            raise InvalidRequest("user must be a non-empty string", field="user")
        return f"user:{user}", {"type": "user", "id": user}
    if subject is None or subject == "app":
        return APP_KEY, {"type": "app"}
    if isinstance(subject, Subject):
        wire = subject.to_wire()
    elif isinstance(subject, Mapping):
        wire = dict(subject)
    else:
        raise InvalidRequest(
            "subject must be 'app', a Subject, or a mapping like {'type': 'user', 'id': ...}; "
            "for a user, pass user=...",
            field="subject",
        )
    kind = wire.get("type")
    if not isinstance(kind, str) or not kind:
        raise InvalidRequest("a subject needs a 'type'", field="subject")
    if kind == "user":
        user_id = wire.get("id")
        if not isinstance(user_id, str) or not user_id:
            raise InvalidRequest("a user subject needs a non-empty 'id'", field="subject")
        issuer = wire.get("issuer")
        if issuer is None:
            wire.pop("issuer", None)
        elif not isinstance(issuer, str) or not issuer:
            raise InvalidRequest("a user subject's 'issuer' must be a non-empty string", field="subject")
    if set(wire) <= {"type", "id"} and kind in ("app", "user"):
        return (APP_KEY if kind == "app" else f"user:{wire['id']}"), wire
    canonical = {k: v for k, v in wire.items() if k != "token"}
    if "token" in wire:
        canonical["tokenDigest"] = _digest(str(wire["token"]))
    try:
        rendered = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("a subject must be JSON-serializable", field="subject") from exc
    return f"{kind}:{rendered}", wire
