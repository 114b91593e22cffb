"""The provider contract: what the core asks of a provider plug-in, and the values they exchange.

A provider knows one kind of connector: which configuration it takes (and which fields are
secret), what it can do, and how to mint, narrow and revoke. Built-in providers register
through the ``valetkey.providers`` entry-point group exactly as third-party ones do
(``valetkey.providers.registry``).

The arrow points one way: ``valetkey.providers`` implements this module; the core never imports
a provider. Providers see only the domain (``valetkey.core.models``) and what the broker lends
them for one call (``ProviderContext``): no database, no web framework.

Optional abilities are declared, never sniffed: ``Provider.user_flows()`` returns the user
grants a provider supports, one protocol per grant (authorization code, device, refresh,
assertion, exchange, revocation), each ``None`` when the provider has no such grant.

Every contract below says what it checks and what it leaves to its caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar

from valetkey.core.clock import Clock
from valetkey.core.models import Connector, SubjectType, TokenRequest
from valetkey.errors import UnsupportedOperation

__all__ = [
    "AssertionFlow",
    "AuthorizationCodeFlow",
    "AuthorizationStart",
    "Capabilities",
    "ConfigField",
    "DeviceFlow",
    "DeviceStart",
    "ExchangeFlow",
    "MintedToken",
    "Provider",
    "ProviderContext",
    "RefreshFlow",
    "RevokeResult",
    "TokenSet",
    "UserFlows",
    "UserTokenRevocation",
    "ValidatedConfig",
    "field_names",
    "require_user_flows",
]

# -- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a connector can do, as its provider declares it (parsed once per connector view)."""

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
class ConfigField:
    """One field of a connector type's configuration (``data``), as the provider declares it.

    The declaration is what ``validate_config`` accepts (it refuses any other field) and what
    people are shown (``valetkey connect create --help``, the CLI's prompt for secrets). It does
    **not** check values: ``validate_config`` does.
    """

    name: str
    help: str
    #: Stored encrypted and never shown again; the CLI asks for it with hidden input.
    sensitive: bool = False
    #: A multi-line value (a PEM key): given in a file, never typed at a prompt.
    multiline: bool = False
    #: Whether a payload needs it: always, never, or depending on the rest of the payload.
    required: bool | Callable[[Mapping[str, Any]], bool] = False

    def needed(self, data: Mapping[str, Any]) -> bool:
        """Whether ``data`` (a create payload) needs this field."""
        return self.required(data) if callable(self.required) else self.required


def field_names(fields: tuple[ConfigField, ...]) -> tuple[str, ...]:
    return tuple(f.name for f in fields)


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


# -- what the broker lends --------------------------------------------------------------------

HttpT_co = TypeVar("HttpT_co", covariant=True)


class ProviderContext(Protocol[HttpT_co]):
    """What the broker lends a provider for one operation.

    The core passes the context through unopened: it never makes a request itself, so it does
    not name an HTTP client. The server builds the concrete context, and its providers declare
    the client they expect (Valetkey's providers: ``ProviderContext[httpx2.AsyncClient]``, the
    broker's one outbound client, behind the SSRF guard). The context does **not** bound a call:
    the core's ``ProviderGate`` does (per-connector concurrency and a deadline).
    """

    @property
    def http(self) -> HttpT_co:
        """The outbound HTTP client for provider calls."""
        ...

    @property
    def clock(self) -> Clock:
        """The broker's clock: the only source of "now" for expiries."""
        ...


# -- the provider -----------------------------------------------------------------------------


class Provider(Protocol):
    """One kind of connector. Instances are stateless; the broker builds one per type."""

    #: The connector type this provider handles, e.g. "oauth".
    type: ClassVar[str]
    #: Services whose connectors default to this provider, e.g. ("api-key",).
    services: ClassVar[tuple[str, ...]]
    #: The configuration fields ``validate_config`` accepts, each with its help text.
    config_fields: ClassVar[tuple[ConfigField, ...]]

    def capabilities(self, connector: Connector) -> Capabilities:
        """What ``connector`` can do. Pure (no I/O); the exchange asks once per connector view.

        Does **not** check the connector's configuration beyond what it needs to answer (that
        was ``validate_config``'s job when the connector was saved).
        """
        ...

    def validate_config(
        self, data: Mapping[str, Any], previous: ValidatedConfig | None = None
    ) -> ValidatedConfig:
        """Check a create/update payload; raise ``InvalidRequest`` naming the field.

        On update, ``previous`` holds the stored values: a secret that the payload leaves out is
        kept. Does **not** contact the provider (an endpoint that is down is found at first use).
        """
        ...

    def user_flows(self) -> UserFlows | None:
        """The user grants this kind of provider supports; None: it cannot act for a user.

        A declaration about the provider, not about one connector: a connector that does not
        enable a grant is refused by the grant itself (``UnsupportedOperation``).
        """
        ...

    async def mint(
        self, ctx: ProviderContext[Any], connector: Connector, request: TokenRequest
    ) -> MintedToken:
        """Mint (or fetch) a credential for ``request`` (the ``app`` subject).

        The request was already checked against the link's policy and the connector's
        capabilities; the provider checks only that it can honour it, and refuses (never
        widens) what it cannot narrow. Does **not** cache, record or audit: the exchange does.
        """
        ...

    async def revoke(
        self, ctx: ProviderContext[Any], connector: Connector, token: MintedToken
    ) -> RevokeResult:
        """Revoke a credential this provider minted; ``skipped`` when it has no way to.

        Does **not** check who may revoke (the exchange did) or forget the token (the store does).
        """
        ...


# -- user flows, one protocol per grant ---------------------------------------------------------
#
# Errors, for every flow: provider refusals raise ``ProviderError`` carrying the provider's
# OAuth ``error`` code in details; a grant the connector does not enable raises
# ``UnsupportedOperation``. None of them stores, audits or binds a grant to a person: the
# consent service and the grant store do.


class AuthorizationCodeFlow(Protocol):
    """RFC 6749 §4.1 with PKCE S256 (RFC 7636): consent in a browser."""

    async def start_authorization(
        self,
        ctx: ProviderContext[Any],
        connector: Connector,
        *,
        redirect_uri: str,
        state: str,
        scopes: tuple[str, ...] | None,
        resources: tuple[str, ...] | None = None,
        login_hint: str | None = None,
        prompt: str | None = None,
    ) -> AuthorizationStart:
        """Build the authorization URL and the PKCE verifier (and an OIDC nonce).

        Does **not** check ``redirect_uri`` or ``state``: the consent service owns both.
        ``prompt`` (OpenID Connect's, as the app sent it) goes to the provider where it has one.
        """
        ...

    async def exchange_code(
        self,
        ctx: ProviderContext[Any],
        connector: Connector,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str | None,
        resources: tuple[str, ...] | None = None,
    ) -> TokenSet:
        """Redeem ``code`` at the token endpoint; verify an OIDC ID token (nonce, signature,
        iss, aud, exp) when one applies.

        Does **not** check that the person who consented is the user the app named: the app's
        confirm call does (docs/security.md).
        """
        ...


class DeviceFlow(Protocol):
    """RFC 8628: the device authorization grant."""

    async def start_device(
        self, ctx: ProviderContext[Any], connector: Connector, *, scopes: tuple[str, ...] | None
    ) -> DeviceStart | None:
        """RFC 8628 §3.1, or None when the provider has no device endpoint (the broker then
        serves its own device page over the authorization-code flow)."""
        ...

    async def poll_device(
        self, ctx: ProviderContext[Any], connector: Connector, *, device_code: str
    ) -> TokenSet:
        """RFC 8628 §3.4 once. Raises ``AuthorizationPending`` (details ``slowDown=True`` for
        ``slow_down``), ``AccessDenied``, ``AuthorizationExpired`` or ``InvalidGrant``.

        Does **not** pace itself: the consent service honours the interval.
        """
        ...


class RefreshFlow(Protocol):
    """RFC 6749 §6: refreshing (and narrowing) a user's access token."""

    async def refresh(
        self,
        ctx: ProviderContext[Any],
        connector: Connector,
        *,
        refresh_token: str,
        scopes: tuple[str, ...] | None = None,
        resources: tuple[str, ...] | None = None,
    ) -> TokenSet:
        """Refresh; ``invalid_grant`` raises ``InvalidGrant``. A response without a refresh
        token is returned as is (the grant store keeps the old one).

        Does **not** serialise refreshes: the grant store's claim does, so a rotated refresh
        token is never presented twice.
        """
        ...


class AssertionFlow(Protocol):
    """RFC 7523 §2.1: the JWT bearer grant, with an assertion signed by the connector's key."""

    async def jwt_bearer(
        self,
        ctx: ProviderContext[Any],
        connector: Connector,
        *,
        subject: str,
        issuer: str | None,
        audience: str | None,
        claims: Mapping[str, Any],
        scopes: tuple[str, ...] | None,
    ) -> TokenSet:
        """Sign an assertion for ``subject`` and redeem it.

        Does **not** check that the caller may name ``subject``: the link's policy did.
        """
        ...


class ExchangeFlow(Protocol):
    """RFC 8693 §2.1: token exchange at the provider's token endpoint."""

    async def token_exchange(
        self,
        ctx: ProviderContext[Any],
        connector: Connector,
        *,
        subject_token: str,
        subject_token_type: str,
        scopes: tuple[str, ...] | None,
        audience: str | None,
        resources: tuple[str, ...] | None,
    ) -> TokenSet:
        """Exchange ``subject_token``. Does **not** verify it: the provider does."""
        ...


class UserTokenRevocation(Protocol):
    """RFC 7009: revoking a user's access or refresh token."""

    async def revoke_user_token(
        self, ctx: ProviderContext[Any], connector: Connector, *, token: str, hint: str
    ) -> RevokeResult:
        """RFC 7009 with ``token_type_hint`` ``access_token`` or ``refresh_token``; ``skipped``
        when the connector has no revocation endpoint."""
        ...


@dataclass(frozen=True, slots=True)
class UserFlows:
    """The user grants a provider supports; each is None when it has no such grant."""

    authorization_code: AuthorizationCodeFlow | None = None
    device: DeviceFlow | None = None
    refresh: RefreshFlow | None = None
    assertion: AssertionFlow | None = None
    exchange: ExchangeFlow | None = None
    revocation: UserTokenRevocation | None = None


def require_user_flows(provider: Provider, connector: Connector) -> UserFlows:
    """``provider``'s user flows, or ``UnsupportedOperation`` when it cannot act for a user."""
    flows = provider.user_flows()
    if flows is None:
        raise UnsupportedOperation(f"{connector.type} connectors cannot act for a user")
    return flows
