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
    token_type: str = "Bearer"
    installation_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Provider-side material needed to revoke later (never sent to the app).
    refresh_token: str | None = field(default=None, repr=False)


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
