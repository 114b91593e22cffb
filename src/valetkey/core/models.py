"""The domain's value types (DESIGN §2). Plain frozen dataclasses: no web framework, no ORM."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from valetkey.errors import InvalidRequest

SubjectType = Literal["app", "user", "jwt-bearer", "token"]
SUBJECT_TYPES: tuple[SubjectType, ...] = ("app", "user", "jwt-bearer", "token")

STANDARD_ENVIRONMENTS = ("development", "preview", "production")
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_UID_PART = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
#: A user subject's issuer: 1-255 visible ASCII characters other than ``|`` (which separates
#: it from the id in ``Subject.key``). Issuers are usually URLs (``https://idp.example``).
MAX_ISSUER = 255
_ISSUER = re.compile(r"^[\x21-\x7b\x7d\x7e]{1,255}$")


class Role(enum.StrEnum):
    """A team member's role. Owners manage members and keys; viewers only read."""

    OWNER = "owner"
    MEMBER = "member"
    VIEWER = "viewer"

    def can_write(self) -> bool:
        return self in (Role.OWNER, Role.MEMBER)

    def at_least(self, needed: Role) -> bool:
        """True when this role may do what ``needed`` may (viewer < member < owner)."""
        order = (Role.VIEWER, Role.MEMBER, Role.OWNER)
        return order.index(self) >= order.index(needed)


class Decision(enum.StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"


def check_slug(value: str, what: str) -> str:
    """Return ``value`` if it is a lowercase slug (projects, environments, names), else raise."""
    if not isinstance(value, str) or not _SLUG.match(value):
        raise InvalidRequest(
            f"{what} must be 1-40 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            field=what,
        )
    return value


_CONNECTOR_ID = re.compile(r"^con_[A-Za-z0-9_-]{1,64}$")


def is_connector_id(value: object) -> bool:
    """Whether ``value`` names a connector by its id (``con_…``) rather than by its uid."""
    return isinstance(value, str) and _CONNECTOR_ID.match(value) is not None


def parse_uid(uid: str) -> tuple[str, str]:
    """Split a connector uid ``service/name`` and validate both halves."""
    if not isinstance(uid, str) or uid.count("/") != 1:
        raise InvalidRequest("a connector uid has the form service/name", field="uid")
    service, name = uid.split("/")
    for part, what in ((service, "service"), (name, "name")):
        if not _UID_PART.match(part):
            raise InvalidRequest(
                f"connector {what} must be 1-64 characters of a-z, 0-9, '.', '_' and '-'",
                field=what,
            )
    return service, name


def check_issuer(value: object, field: str) -> str:
    """Return ``value`` if it is a valid user-subject issuer, else raise naming ``field``."""
    if not isinstance(value, str) or not _ISSUER.match(value):
        raise InvalidRequest(
            f"{field} must be 1-{MAX_ISSUER} visible ASCII characters other than '|'",
            field=field,
        )
    return value


@dataclass(frozen=True, slots=True)
class Subject:
    """On whose authority a token acts.

    A user is ``(issuer, id)``: the same id from another issuer is another person. ``issuer``
    None is the app's own user namespace (a user named without an issuer), itself distinct
    from every issuer's users.
    """

    type: SubjectType
    id: str | None = None  # the user id for "user"; None for "app"
    #: Who issued a user's id (None: the app's own users). Only for "user".
    issuer: str | None = None

    def key(self) -> str:
        """A text key, unambiguous across subjects: ``app``, ``user:alice``, ``user@ISSUER|alice``.

        An issuer holds no ``|``, so the first ``|`` ends it; an id may hold anything.
        """
        if self.issuer is not None:
            return f"{self.type}@{self.issuer}|{self.id or ''}"
        return self.type if self.id is None else f"{self.type}:{self.id}"


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A normalized exchange request: scopes sorted and de-duplicated, so field order is irrelevant.

    For a ``token`` subject (RFC 8693) ``subject_token`` holds the credential to exchange and the
    subject's id is its SHA-256; for ``jwt-bearer`` (RFC 7523) the subject's id is the assertion's
    ``sub`` and ``assertion`` the other claims asked for (``iss``, ``aud``, ``additionalClaims``).
    """

    subject: Subject
    scopes: tuple[str, ...] | None = None
    installation_id: str | None = None
    resources: tuple[str, ...] | None = None
    audience: str | None = None
    subject_token: str | None = field(default=None, repr=False)
    subject_token_type: str | None = None
    assertion: tuple[tuple[str, str], ...] | None = None

    def cache_key(self) -> tuple[Any, ...]:
        return (
            self.subject.key(),
            self.scopes,
            self.installation_id,
            self.resources,
            self.audience,
            self.subject_token_type,
            self.assertion,
        )


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified caller. Resolves to exactly one (team, project, environment)."""

    team_id: str
    project_id: str
    project_slug: str
    environment: str
    kind: Literal["development", "oidc", "access_token", "member"]
    subject: str  # the token's `sub`, or the access token's id
    expires_at: datetime | None
    #: For access tokens: the user the token may act for (None: app subjects only). That is
    #: the app's own user of that id (issuer None), never the same id from another issuer.
    user_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Member:
    """A verified person (or automation) using the management API."""

    team_id: str
    member_id: str
    name: str
    role: Role
    #: The credential this request presented (what rotating one's own credential replaces).
    credential_id: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """A project link's ceiling. A request can only narrow within it.

    ``scopes`` is None when the link sets no scope ceiling of its own: then the
    connector's configured scopes are the ceiling.
    """

    subjects: tuple[SubjectType, ...] = ("app",)
    scopes: tuple[str, ...] | None = None
    max_lifetime_seconds: int | None = None
    #: Browser consent waits for the app's confirm call (docs/security.md). Turning it off makes
    #: apps that never confirm (e.g. written for Vercel Connect) work, without that defence.
    confirm_consent: bool = True
    #: Issuers whose users may be named (``subject.issuer``). Empty: only issuer-less users,
    #: the app's own namespace.
    user_issuers: tuple[str, ...] = ()
    #: RFC 8707 resources a request may name. Empty: a request may name none.
    resources: tuple[str, ...] = ()
    #: Audiences a request may name. Empty: a request may name none.
    audiences: tuple[str, ...] = ()
    #: Serve a token whose granted scopes the provider did not state (its ``metadata`` says so).
    allow_unknown_scope: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "subjects": list(self.subjects),
            "scopes": None if self.scopes is None else list(self.scopes),
            "maxLifetimeSeconds": self.max_lifetime_seconds,
            "confirmConsent": self.confirm_consent,
            "userIssuers": list(self.user_issuers),
            "resources": list(self.resources),
            "audiences": list(self.audiences),
            "allowUnknownScope": self.allow_unknown_scope,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Policy:
        scopes = data.get("scopes")
        return cls(
            subjects=tuple(data.get("subjects") or ("app",)),
            scopes=None if scopes is None else tuple(scopes),
            max_lifetime_seconds=data.get("maxLifetimeSeconds"),
            confirm_consent=bool(data.get("confirmConsent", True)),
            user_issuers=tuple(data.get("userIssuers") or ()),
            resources=tuple(data.get("resources") or ()),
            audiences=tuple(data.get("audiences") or ()),
            allow_unknown_scope=bool(data.get("allowUnknownScope", False)),
        )


@dataclass(frozen=True, slots=True)
class Connector:
    """A connector as the domain sees it: secrets already decrypted, kept apart from config."""

    id: str
    team_id: str
    uid: str
    service: str
    name: str
    type: str  # the provider plug-in's name: "api-key", "oauth", ...
    config: Mapping[str, Any]
    secrets: Mapping[str, str] = field(repr=False)
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Link:
    """A connector attached to a project for a set of environments."""

    id: str
    connector_id: str
    project_id: str
    environments: tuple[str, ...]
    policy: Policy


# -- trust bindings ----------------------------------------------------------------------------

#: The signing algorithms a trust binding may allow: the one list, checked when a binding is
#: created (``identity.bindings.validate_algorithms``) and when a token is verified against
#: bindings (``identity.verifier``).
BINDING_ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
#: What a binding allows when its creator names no algorithm.
DEFAULT_BINDING_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256")


@dataclass(frozen=True, slots=True)
class TrustBinding:
    """Maps tokens of ``issuer`` for ``audience`` whose claims satisfy ``conditions``.

    A value: matching and validation are ``valetkey.identity.bindings``'.
    """

    id: str
    team_id: str
    project_id: str
    project_slug: str
    environment: str
    issuer: str
    audience: str
    conditions: Mapping[str, str]
    algorithms: tuple[str, ...] = DEFAULT_BINDING_ALGORITHMS
    created_at: datetime | None = field(default=None, compare=False)
