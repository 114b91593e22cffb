"""Generic OAuth 2.0 provider: the client-credentials grant (RFC 6749 §4.4) for the ``app`` subject.

Tokens are minted at the provider per request, narrowed to the requested scopes and
RFC 8707 resources, and revoked through RFC 7009 when the connector names a
revocation endpoint. A provider that grants more scopes than were asked is refused,
never passed on.

Configuration (``secret``: stored encrypted, never shown)::

    tokenUrl        https URL (http only for localhost, 127.0.0.1, [::1])
    clientId        the client's id
    clientSecret    secret
    authMethod      "client_secret_basic" (default) | "client_secret_post"
    scopes          the connector's scope ceiling, a list (default: none)
    scopeSeparator  " " (default) | ","
    revocationUrl   RFC 7009 endpoint (optional; without it, revocation is skipped)
    tokenParams     extra token-request parameters, {name: value}, e.g. {"audience": "..."}
    audienceParam   name of the token parameter that carries a request's ``audience``
                    (optional; without it, requesting an audience is refused)
    description     free text
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from valetkey.core.models import Connector, SubjectType, TokenRequest
from valetkey.errors import InvalidRequest, ProviderError, UnsupportedOperation
from valetkey.providers.base import (
    Capabilities,
    MintedToken,
    ProviderContext,
    RevokeResult,
    ValidatedConfig,
)
from valetkey.providers.config import (
    check_url,
    optional_str,
    refuse_unknown,
    require_mapping,
    require_str,
    secret_str,
)
from valetkey.providers.oauth_client import (
    AUTH_METHODS,
    AuthMethod,
    ClientAuth,
    request_token,
    revoke_token,
)

__all__ = ["OAuthProvider", "OAuthSettings"]

_FIELDS = (
    "tokenUrl",
    "clientId",
    "clientSecret",
    "authMethod",
    "scopes",
    "scopeSeparator",
    "revocationUrl",
    "tokenParams",
    "audienceParam",
    "description",
)
_SECRETS = ("clientSecret",)
_SEPARATORS = (" ", ",")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); the separators are excluded too.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
# RFC 6749 Appendix A.1/A.2: client_id and client_secret are *VSCHAR (%x20-7E).
_VSCHAR = re.compile(r"^[\x20-\x7e]+$")
_PARAM_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Parameters the grant or the client authentication sets; tokenParams may not override them.
_RESERVED_PARAMS = frozenset(
    {
        "grant_type",
        "scope",
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
        "code",
        "code_verifier",
        "redirect_uri",
        "refresh_token",
        "username",
        "password",
        "assertion",
        "device_code",
        "subject_token",
        "subject_token_type",
        "actor_token",
        "actor_token_type",
    }
)
_MAX_SCOPES = 200


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    """An OAuth connector's configuration, checked and typed."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    auth_method: AuthMethod = "client_secret_basic"
    scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    revocation_url: str | None = None
    token_params: Mapping[str, str] = field(default_factory=dict)
    audience_param: str | None = None
    description: str | None = None

    @property
    def client_auth(self) -> ClientAuth:
        return ClientAuth(self.client_id, self.client_secret, self.auth_method)

    @classmethod
    def parse(
        cls, data: Mapping[str, Any], previous: ValidatedConfig | None = None
    ) -> OAuthSettings:
        """Check a configuration payload; raise ``InvalidRequest`` naming the field."""
        data = require_mapping(data)
        refuse_unknown(data, _FIELDS)
        auth_method = data.get("authMethod", "client_secret_basic")
        if auth_method not in AUTH_METHODS:
            raise InvalidRequest(
                f"authMethod must be one of {', '.join(AUTH_METHODS)}", field="authMethod"
            )
        separator = data.get("scopeSeparator", " ")
        if separator not in _SEPARATORS:
            raise InvalidRequest("scopeSeparator must be ' ' or ','", field="scopeSeparator")
        revocation_url = optional_str(data, "revocationUrl")
        audience_param = optional_str(data, "audienceParam", max_length=64)
        if audience_param is not None:
            _check_param_name(audience_param, "audienceParam")
        return cls(
            token_url=check_url(require_str(data, "tokenUrl"), "tokenUrl"),
            client_id=_vschar(require_str(data, "clientId", max_length=512), "clientId"),
            client_secret=_vschar(secret_str(data, "clientSecret", previous), "clientSecret"),
            auth_method=auth_method,
            scopes=_parse_scopes(data.get("scopes"), separator),
            scope_separator=separator,
            revocation_url=(
                None if revocation_url is None else check_url(revocation_url, "revocationUrl")
            ),
            token_params=_parse_token_params(data.get("tokenParams")),
            audience_param=audience_param,
            description=optional_str(data, "description", max_length=1000),
        )

    @classmethod
    def from_connector(cls, connector: Connector) -> OAuthSettings:
        """Rebuild the settings of a stored connector (config and decrypted secrets)."""
        try:
            return cls.parse({**connector.config, **connector.secrets})
        except InvalidRequest as exc:
            raise ProviderError(
                f"connector {connector.uid} has an invalid stored configuration: {exc.message}",
                **exc.details,
            ) from exc

    def to_validated(self) -> ValidatedConfig:
        config: dict[str, Any] = {
            "tokenUrl": self.token_url,
            "clientId": self.client_id,
            "authMethod": self.auth_method,
            "scopes": list(self.scopes),
            "scopeSeparator": self.scope_separator,
        }
        optional = {
            "revocationUrl": self.revocation_url,
            "tokenParams": dict(self.token_params) or None,
            "audienceParam": self.audience_param,
            "description": self.description,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
        return ValidatedConfig(config=config, secrets={"clientSecret": self.client_secret})


def _vschar(value: str, field_name: str) -> str:
    if not _VSCHAR.match(value):
        raise InvalidRequest(
            f"{field_name} must be printable ASCII (RFC 6749 Appendix A)", field=field_name
        )
    return value


def _check_param_name(name: str, field_name: str) -> None:
    if not _PARAM_NAME.match(name):
        raise InvalidRequest(
            f"{field_name} must be a parameter name of letters, digits, '_', '.', ':' or '-'",
            field=field_name,
        )
    if name in _RESERVED_PARAMS:
        raise InvalidRequest(
            f"{field_name} may not set the reserved parameter {name!r}", field=field_name
        )


def _parse_scopes(value: object, separator: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_SCOPES:
        raise InvalidRequest(
            f"scopes must be a list of at most {_MAX_SCOPES} strings", field="scopes"
        )
    seen: list[str] = []
    for scope in value:
        if not isinstance(scope, str) or not _SCOPE_TOKEN.match(scope) or separator in scope:
            raise InvalidRequest(
                "each scope must be a non-empty RFC 6749 scope token (no spaces, quotes, "
                "backslashes or the scope separator)",
                field="scopes",
            )
        if scope in seen:
            raise InvalidRequest(f"scope {scope!r} is listed twice", field="scopes")
        seen.append(scope)
    return tuple(seen)


def _parse_token_params(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > 20:
        raise InvalidRequest(
            "tokenParams must be an object of at most 20 entries", field="tokenParams"
        )
    params: dict[str, str] = {}
    for name, param in value.items():
        if not isinstance(name, str):
            raise InvalidRequest("tokenParams names must be strings", field="tokenParams")
        _check_param_name(name, "tokenParams")
        if not isinstance(param, str) or not param or len(param) > 2048:
            raise InvalidRequest(
                f"tokenParams[{name!r}] must be a non-empty string of at most 2048 characters",
                field="tokenParams",
            )
        params[name] = param
    return params


class OAuthProvider:
    """Client credentials (RFC 6749 §4.4), narrowed; RFC 8707 resources; RFC 7009 revocation."""

    type: ClassVar[str] = "oauth"
    services: ClassVar[tuple[str, ...]] = ("oauth",)
    subjects: ClassVar[tuple[SubjectType, ...]] = ("app",)

    def capabilities(self, connector: Connector) -> Capabilities:
        return Capabilities(
            subjects=self.subjects,
            scopable=True,
            short_lived=True,
            revocation=bool(connector.config.get("revocationUrl")),
        )

    def validate_config(
        self, data: Mapping[str, Any], previous: ValidatedConfig | None = None
    ) -> ValidatedConfig:
        """Check the whole configuration; ``clientSecret`` may be left out on update to keep it."""
        return OAuthSettings.parse(data, previous).to_validated()

    async def mint(
        self, ctx: ProviderContext, connector: Connector, request: TokenRequest
    ) -> MintedToken:
        """Run the client-credentials grant for exactly the requested scopes and resources."""
        if request.subject.type not in self.subjects:
            raise UnsupportedOperation(
                "oauth connectors issue tokens for the app subject only, "
                f"not {request.subject.type!r}",
                subject=request.subject.type,
            )
        settings = OAuthSettings.from_connector(connector)
        requested = settings.scopes if request.scopes is None else request.scopes
        params: dict[str, str | tuple[str, ...]] = {
            "grant_type": "client_credentials",
            **settings.token_params,
        }
        if requested:
            params["scope"] = settings.scope_separator.join(requested)
        if request.resources:
            params["resource"] = request.resources
        if request.audience is not None:
            if settings.audience_param is None:
                raise UnsupportedOperation(
                    "this oauth connector has no audienceParam: it cannot narrow by audience",
                    field="audience",
                )
            params[settings.audience_param] = request.audience
        response = await request_token(
            ctx.http,
            settings.token_url,
            settings.client_auth,
            params,
            scope_separator=settings.scope_separator,
        )
        granted = requested if response.scopes is None else response.scopes
        widened = sorted(set(granted) - set(requested))
        if widened:
            # DESIGN §9: never hand out more than was asked for; withdraw the token if we can.
            if settings.revocation_url is not None:
                await revoke_token(
                    ctx.http,
                    settings.revocation_url,
                    settings.client_auth,
                    response.access_token,
                    "access_token",
                )
            raise ProviderError(
                "the provider granted scopes that were not requested (widened); "
                "the token was not used",
                error="scope_widened",
                widened=widened,
            )
        return MintedToken(
            token=response.access_token,
            expires_at=response.expires_at(ctx.clock),
            scopes=tuple(granted) if granted or request.scopes is not None else None,
            token_type=response.token_type,
        )

    async def revoke(
        self, ctx: ProviderContext, connector: Connector, token: MintedToken
    ) -> RevokeResult:
        """Revoke at the RFC 7009 endpoint; skipped when the connector has none."""
        settings = OAuthSettings.from_connector(connector)
        if settings.revocation_url is None:
            return RevokeResult(revoked=False, skipped=True)
        outcome = await revoke_token(
            ctx.http, settings.revocation_url, settings.client_auth, token.token, "access_token"
        )
        return RevokeResult(revoked=outcome.revoked, error=outcome.error)
