"""The provider plug-in interface (DESIGN §7).

A provider knows one kind of connector: which configuration it takes (and which
fields are secret), what it can do, and how to mint, narrow and revoke. Built-in
providers register through the ``valetkey.providers`` entry-point group exactly
as third-party ones do.

Providers see only the domain (``valetkey.core.models``) and an ``httpx.AsyncClient``
handed to them by the broker: no database, no web framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

import httpx

from valetkey.core.clock import Clock
from valetkey.core.models import Connector, SubjectType, TokenRequest


@dataclass(frozen=True, slots=True)
class Capabilities:
    subjects: tuple[SubjectType, ...]
    #: Scopes can be narrowed per request at the provider.
    scopable: bool
    #: Tokens expire on their own (False: a static secret such as an API key).
    short_lived: bool
    #: The provider can revoke what it issued (RFC 7009 or its own API).
    revocation: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "subjects": list(self.subjects),
            "scopable": self.scopable,
            "shortLived": self.short_lived,
            "revocation": self.revocation,
        }


@dataclass(frozen=True, slots=True)
class ValidatedConfig:
    """A connector's configuration split into what may be shown and what is secret."""

    config: dict[str, Any]
    secrets: dict[str, str] = field(repr=False)


@dataclass(frozen=True, slots=True)
class MintedToken:
    """A credential from the provider. ``token`` is the only field that reaches the app."""

    token: str = field(repr=False)
    expires_at: datetime | None  # None: does not expire (API keys)
    scopes: tuple[str, ...] | None = None
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    installation_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Provider-side material needed to revoke later (never sent to the app).
    refresh_token: str | None = field(default=None, repr=False)
    #: Whether the provider stated the granted scopes (False: ``scopes`` is only what was asked).
    scope_stated: bool = True


@dataclass(frozen=True, slots=True)
class RevokeResult:
    revoked: bool  # the provider confirmed revocation
    skipped: bool = False  # the provider has no way to revoke this
    error: str | None = None  # a failure, with a message that holds no secret


class ProviderContext(Protocol):
    """What the broker lends a provider for one operation."""

    @property
    def http(self) -> httpx.AsyncClient: ...

    @property
    def clock(self) -> Clock: ...


class Provider(Protocol):
    """One kind of connector. Instances are stateless; the broker builds one per type."""

    #: The connector type this provider handles, e.g. "oauth".
    type: ClassVar[str]
    #: Services whose connectors default to this provider, e.g. ("api-key",).
    services: ClassVar[tuple[str, ...]]

    def capabilities(self, connector: Connector) -> Capabilities: ...

    def validate_config(
        self, data: Mapping[str, Any], previous: ValidatedConfig | None = None
    ) -> ValidatedConfig:
        """Check a create/update payload; raise ``InvalidRequest`` naming the field.

        On update, ``previous`` holds the stored values: a secret that the payload
        leaves out is kept.
        """
        ...

    async def mint(
        self, ctx: ProviderContext, connector: Connector, request: TokenRequest
    ) -> MintedToken:
        """Mint (or fetch) a credential for ``request``, already checked against policy."""
        ...

    async def revoke(
        self, ctx: ProviderContext, connector: Connector, token: MintedToken
    ) -> RevokeResult:
        """Revoke a credential this provider minted."""
        ...


# -- user flows (authorization code, device code, refresh, assertion and exchange grants) -----


@dataclass(frozen=True, slots=True)
class TokenSet:
    """What a provider's token endpoint returned for a user grant. Stored encrypted by the broker."""

    access_token: str = field(repr=False)
    expires_at: datetime | None
    refresh_token: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] | None = None
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    #: The provider's account id for the person (the ID token's or introspection's ``sub``), if known.
    provider_subject: str | None = None
    #: Verified ID token claims (when the provider is OpenID Connect and returned one), else {}.
    id_claims: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Whether the provider's answer stated the granted scopes (not stored: known at mint only).
    scope_stated: bool = True


@dataclass(frozen=True, slots=True)
class AuthorizationStart:
    """A built authorization-code request (RFC 6749 §4.1 + PKCE RFC 7636 S256)."""

    url: str
    #: The PKCE code verifier; the broker keeps it (encrypted) until the callback, single-use.
    code_verifier: str = field(repr=False)
    nonce: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class DeviceStart:
    """An RFC 8628 device authorization response."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_at: datetime
    interval: int


class UserFlows(Protocol):
    """Optional provider capability: acting for a named user.

    Errors: provider refusals raise ``ProviderError`` carrying the provider's OAuth
    ``error`` code in details; ``invalid_grant`` on refresh raises ``InvalidGrant``;
    device polling raises ``AuthorizationPending`` (details ``slowDown=True`` for
    ``slow_down``), ``AccessDenied`` or ``AuthorizationExpired``.
    """

    async def start_authorization(
        self,
        ctx: ProviderContext,
        connector: Connector,
        *,
        redirect_uri: str,
        state: str,
        scopes: tuple[str, ...] | None,
        resources: tuple[str, ...] | None = None,
        login_hint: str | None = None,
    ) -> AuthorizationStart: ...

    async def exchange_code(
        self,
        ctx: ProviderContext,
        connector: Connector,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str | None,
        resources: tuple[str, ...] | None = None,
    ) -> TokenSet: ...

    async def refresh(
        self,
        ctx: ProviderContext,
        connector: Connector,
        *,
        refresh_token: str,
        scopes: tuple[str, ...] | None = None,
        resources: tuple[str, ...] | None = None,
    ) -> TokenSet: ...

    async def start_device(
        self, ctx: ProviderContext, connector: Connector, *, scopes: tuple[str, ...] | None
    ) -> DeviceStart | None:
        """RFC 8628 §3.1, or None when the provider has no device endpoint."""
        ...

    async def poll_device(
        self, ctx: ProviderContext, connector: Connector, *, device_code: str
    ) -> TokenSet: ...

    async def revoke_user_token(
        self, ctx: ProviderContext, connector: Connector, *, token: str, hint: str
    ) -> RevokeResult:
        """RFC 7009 with ``token_type_hint`` ``access_token`` or ``refresh_token``."""
        ...

    async def jwt_bearer(
        self,
        ctx: ProviderContext,
        connector: Connector,
        *,
        subject: str,
        issuer: str | None,
        audience: str | None,
        claims: Mapping[str, Any],
        scopes: tuple[str, ...] | None,
    ) -> TokenSet:
        """RFC 7523 §2.1: an assertion signed with the connector's private key."""
        ...

    async def token_exchange(
        self,
        ctx: ProviderContext,
        connector: Connector,
        *,
        subject_token: str,
        subject_token_type: str,
        scopes: tuple[str, ...] | None,
        audience: str | None,
        resources: tuple[str, ...] | None,
    ) -> TokenSet:
        """RFC 8693 §2.1 at the provider's token endpoint."""
        ...
