"""The management API's answers: response models (documented in /openapi.json) and the
functions that render the services' records (``valetkey.services``) to them.

The wire names are decided here and only here. Every time is ISO 8601 text in UTC; usage
metrics are camelCase keys. The Connect wire (``server.connect``, ``server.consent``) keeps
Vercel's shapes (epoch milliseconds).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from valetkey.core.models import Policy
from valetkey.core.providers import Capabilities
from valetkey.services.access_tokens import AccessTokenIssued, AccessTokenRecord
from valetkey.services.connectors import ConnectorRecord
from valetkey.services.members import MemberCredentialIssued, MemberRecord
from valetkey.services.projects import ProjectRecord
from valetkey.services.reports import AuditRecord
from valetkey.services.trust import BindingRecord

# -- response models ----------------------------------------------------------------------
# The services (valetkey.services) return typed records; the functions below render them as
# the wire's camelCase dicts, and the models document those in /openapi.json. They validate
# what is rendered without coercing, renaming or dropping anything: field names are the wire
# names, optional values stay (null), and models allow extra keys added later.


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class MemberOut(_Out):
    id: str
    name: str
    role: str
    createdAt: str
    lastUsedAt: str | None = Field(description="last use of a credential, to the minute")
    expiresAt: str | None = Field(description="when its credential expires (null: never)")


class MemberCreated(_Out):
    """A new member (or a rotated credential); ``credential`` is shown only in this response."""

    id: str
    name: str
    role: str
    expiresAt: str | None
    credential: str = Field(repr=False)


class MemberRevoked(_Out):
    id: str
    name: str
    revoked: bool


class ProjectOut(_Out):
    id: str
    slug: str
    name: str
    environments: list[str]
    createdAt: str


class EnvironmentOut(_Out):
    project: str
    slug: str


class DevelopmentIdentity(_Out):
    token: str = Field(repr=False)
    expiresAt: str = Field(description="ISO 8601, UTC")
    url: str
    project: str
    environment: str


class CapabilitiesOut(_Out):
    subjects: list[str]
    scopable: bool
    shortLived: bool
    revocation: bool


class PolicyOut(_Out):
    subjects: list[str]
    scopes: list[str] | None
    maxLifetimeSeconds: int | None
    confirmConsent: bool
    userIssuers: list[str]
    resources: list[str]
    audiences: list[str]
    allowUnknownScope: bool


class LinkOut(_Out):
    project: str
    environments: list[str]
    policy: PolicyOut


class ConnectorOut(_Out):
    id: str
    uid: str
    service: str
    name: str
    type: str
    data: dict[str, Any]
    secretFields: list[str]
    capabilities: CapabilitiesOut
    createdAt: str
    updatedAt: str
    links: list[LinkOut]


class Attached(_Out):
    connector: str
    project: str
    environments: list[str]
    policy: PolicyOut


class Detached(_Out):
    connector: str
    project: str
    environments: list[str]
    detached: bool


class ConnectorRemoved(_Out):
    uid: str
    removed: bool
    detached: int


class TrustBindingOut(_Out):
    id: str
    project: str
    environment: str
    issuer: str
    audience: str
    claims: dict[str, str]
    algorithms: list[str]
    createdAt: str
    active: bool = Field(
        description="false: its (issuer, audience) belongs to another team, so it is never selected"
    )


class BindingDeleted(_Out):
    id: str
    deleted: bool


class AccessTokenCreated(_Out):
    """A new access token; ``token`` is shown only in this response."""

    id: str
    name: str
    project: str
    environment: str
    userId: str | None
    expiresAt: str | None
    token: str = Field(repr=False)


class AccessTokenOut(_Out):
    id: str
    name: str
    project: str
    environment: str
    userId: str | None
    createdAt: str
    expiresAt: str | None
    revokedAt: str | None


class AccessTokenRevoked(_Out):
    id: str
    revoked: bool


class AuditEntry(_Out):
    id: int
    at: str
    actor: str
    action: str
    decision: str
    reason: str
    connector: str | None
    project: str | None
    environment: str | None
    subject: str | None
    details: dict[str, Any]


class Usage(_Out):
    month: str
    counters: dict[str, int] = Field(description="metric (camelCase, e.g. tokenRequests): count")


# -- rendering: records to the wire ---------------------------------------------------------


# Every time on the management wire is ISO 8601 text in UTC (``2026-12-02T04:21:00.5+00:00``);
# the Connect wire (server.connect, server.consent) keeps Vercel's epoch milliseconds.


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; the store writes UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def camel(name: str) -> str:
    """``token_requests`` → ``tokenRequests`` (usage metrics are counted in snake_case)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def member(r: MemberRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "role": r.role.value,
        "createdAt": iso(r.created_at),
        "lastUsedAt": iso(r.last_used_at),
        "expiresAt": iso(r.expires_at),
    }


def issued(r: MemberCredentialIssued) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "role": r.role.value,
        "expiresAt": iso(r.expires_at),
        "credential": r.credential,
    }


def project(r: ProjectRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "slug": r.slug,
        "name": r.name,
        "environments": list(r.environments),
        "createdAt": iso(r.created_at),
    }


def capabilities(c: Capabilities) -> dict[str, Any]:
    """The provider's own JSON form of its capabilities is the wire's (one definition)."""
    return c.to_json()


def policy(p: Policy) -> dict[str, Any]:
    """A link's policy as stored is the wire's (camelCase; one definition, ``Policy.to_json``)."""
    return p.to_json()


def connector(r: ConnectorRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "uid": r.uid,
        "service": r.service,
        "name": r.name,
        "type": r.type,
        "data": dict(r.data),
        "secretFields": list(r.secret_fields),
        "capabilities": capabilities(r.capabilities),
        "createdAt": iso(r.created_at),
        "updatedAt": iso(r.updated_at),
        "links": [
            {
                "project": link.project,
                "environments": list(link.environments),
                "policy": policy(link.policy),
            }
            for link in r.links
        ],
    }


def binding(r: BindingRecord) -> dict[str, Any]:
    b = r.binding
    return {
        "id": b.id,
        "project": b.project_slug,
        "environment": b.environment,
        "issuer": b.issuer,
        "audience": b.audience,
        "claims": dict(b.conditions),
        "algorithms": list(b.algorithms),
        "createdAt": iso(b.created_at),
        "active": r.active,
    }


def token_issued(r: AccessTokenIssued) -> dict[str, Any]:
    return _token_fields(r) | {"expiresAt": iso(r.expires_at), "token": r.token}


def token(r: AccessTokenRecord) -> dict[str, Any]:
    return _token_fields(r) | {
        "createdAt": iso(r.created_at),
        "expiresAt": iso(r.expires_at),
        "revokedAt": iso(r.revoked_at),
    }


def _token_fields(r: AccessTokenIssued | AccessTokenRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "project": r.project,
        "environment": r.environment,
        "userId": r.user_id,
    }


def audit(r: AuditRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "at": iso(r.at),
        "actor": r.actor,
        "action": r.action,
        "decision": r.decision,
        "reason": r.reason,
        "connector": r.connector,
        "project": r.project,
        "environment": r.environment,
        "subject": r.subject,
        "details": dict(r.details),
    }
