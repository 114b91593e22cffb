"""The generic ``oauth`` connector's configuration: parsed, checked, typed.

Every refusal is an :class:`~valetkey.errors.InvalidRequest` naming the field; no message
carries a secret. The fields are documented in :mod:`valetkey.providers.oauth`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from valetkey.core.models import SUBJECT_TYPES, Connector, SubjectType
from valetkey.core.providers import ConfigField, ValidatedConfig, field_names
from valetkey.errors import InvalidRequest, ProviderError
from valetkey.providers.config import (
    optional_str,
    optional_url,
    refuse_unknown,
    require_mapping,
    require_str,
)
from valetkey.providers.oauth.client_auth import AUTH_METHODS, AuthMethod
from valetkey.providers.signing import KeyRefused, SigningKey

__all__ = ["GRANTS", "Grant", "OAuthSettings"]

Grant = Literal[
    "client_credentials", "authorization_code", "device_code", "jwt_bearer", "token_exchange"
]
GRANTS: tuple[Grant, ...] = get_args(Grant)

def _signs(data: Mapping[str, Any]) -> bool:
    grants = data.get("grants")
    return data.get("authMethod") == "private_key_jwt" or (
        isinstance(grants, list) and "jwt_bearer" in grants
    )


#: The configuration the ``oauth`` type takes (``parse`` refuses any other field).
FIELDS = (
    ConfigField("issuer", "discover the endpoints from this issuer (RFC 8414, then OIDC)"),
    ConfigField("tokenUrl", "the token endpoint (required without issuer)"),
    ConfigField("authorizationUrl", "the authorization endpoint (overrides discovery)"),
    ConfigField("deviceAuthorizationUrl", "the RFC 8628 endpoint (overrides discovery)"),
    ConfigField("revocationUrl", "the RFC 7009 endpoint (overrides discovery)"),
    ConfigField("jwksUri", "the issuer's keys for ID tokens (needs issuer)"),
    ConfigField("clientId", "the client's id", required=True),
    ConfigField(
        "clientSecret",
        "for client_secret_basic / client_secret_post",
        sensitive=True,
        required=lambda data: data.get("authMethod", "client_secret_basic") != "private_key_jwt",
    ),
    ConfigField(
        "privateKey",
        "PEM (RSA ≥ 2048 or EC P-256); signs private_key_jwt and jwt_bearer",
        sensitive=True,
        multiline=True,
        required=_signs,
    ),
    ConfigField("privateKeyId", "the key's kid"),
    ConfigField("authMethod", "client_secret_basic (default), client_secret_post, private_key_jwt"),
    ConfigField("grants", f"a list from {', '.join(GRANTS)} (default client_credentials)"),
    ConfigField("scopes", "the scope ceiling, a list"),
    ConfigField("userScopes", "scopes asked for in consent (default: scopes)"),
    ConfigField("scopeSeparator", '" " (default) or ","'),
    ConfigField("authorizationParams", "extra authorization-request parameters, {name: value}"),
    ConfigField("tokenParams", "extra token-request parameters, {name: value}"),
    ConfigField("audienceParam", "the token parameter that carries a request's audience"),
    ConfigField("description", "free text"),
)
_FIELDS = field_names(FIELDS)
_SEPARATORS = (" ", ",")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); the separators are excluded too.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
# RFC 6749 Appendix A.1/A.2: client_id and client_secret are *VSCHAR (%x20-7E).
_VSCHAR = re.compile(r"^[\x20-\x7e]+$")
_PARAM_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Parameters the grant or the client authentication sets; tokenParams may not override them.
_RESERVED_TOKEN_PARAMS = frozenset(
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
        "requested_token_type",
    }
)
# Parameters the authorization request sets itself (RFC 6749 §4.1.1, RFC 7636 §4.3,
# OIDC Core §3.1.2.1, RFC 8707 §2, RFC 9101 request objects that could replace them all).
_RESERVED_AUTHORIZATION_PARAMS = frozenset(
    {
        "response_type",
        "response_mode",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
        "nonce",
        "resource",
        "login_hint",
        "request",
        "request_uri",
    }
)
_MAX_SCOPES = 200
_SUBJECTS_BY_GRANT: dict[Grant, SubjectType] = {
    "client_credentials": "app",
    "authorization_code": "user",
    "device_code": "user",
    "jwt_bearer": "jwt-bearer",
    "token_exchange": "token",
}


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    """An OAuth connector's configuration, checked and typed."""

    client_id: str
    token_url: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    issuer: str | None = None
    authorization_url: str | None = None
    device_authorization_url: str | None = None
    revocation_url: str | None = None
    jwks_uri: str | None = None
    private_key: str | None = field(default=None, repr=False)
    private_key_id: str | None = None
    auth_method: AuthMethod = "client_secret_basic"
    grants: tuple[Grant, ...] = ("client_credentials",)
    scopes: tuple[str, ...] = ()
    user_scopes: tuple[str, ...] | None = None
    scope_separator: str = " "
    authorization_params: Mapping[str, str] = field(default_factory=dict)
    token_params: Mapping[str, str] = field(default_factory=dict)
    audience_param: str | None = None
    description: str | None = None

    @property
    def signing_key(self) -> SigningKey | None:
        """The connector's private key, loaded (None when none is configured)."""
        if self.private_key is None:
            return None
        return SigningKey.from_pem(self.private_key, self.private_key_id)

    @property
    def subjects(self) -> tuple[SubjectType, ...]:
        """The subject types the enabled grants serve, in the order of SUBJECT_TYPES."""
        found = {_SUBJECTS_BY_GRANT[g] for g in self.grants}
        return tuple(s for s in SUBJECT_TYPES if s in found)

    @property
    def consent_scopes(self) -> tuple[str, ...]:
        """Scopes asked for in consent when the request names none."""
        return self.scopes if self.user_scopes is None else self.user_scopes

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
        issuer = optional_url(data, "issuer")
        if issuer is not None and ("?" in issuer):
            raise InvalidRequest("issuer must have no query (RFC 8414 §2)", field="issuer")
        token_url = optional_url(data, "tokenUrl")
        if token_url is None and issuer is None:
            raise InvalidRequest(
                "tokenUrl is required (or an issuer to discover it)", field="tokenUrl"
            )
        audience_param = optional_str(data, "audienceParam", max_length=64)
        if audience_param is not None:
            _check_param_name(audience_param, "audienceParam", _RESERVED_TOKEN_PARAMS)
        client_secret = _secret(data, "clientSecret", previous)
        if client_secret is not None:
            _vschar(client_secret, "clientSecret")
        if auth_method != "private_key_jwt" and client_secret is None:
            raise InvalidRequest(
                f"clientSecret is required for {auth_method}", field="clientSecret"
            )
        private_key = _secret(data, "privateKey", previous, multiline=True)
        private_key_id = optional_str(data, "privateKeyId", max_length=256)
        if private_key is not None:
            try:
                SigningKey.from_pem(private_key, private_key_id)
            except KeyRefused as exc:
                raise InvalidRequest(f"privateKey: {exc}", field="privateKey") from None
        grants = _parse_grants(data.get("grants"))
        settings = cls(
            client_id=_vschar(require_str(data, "clientId", max_length=512), "clientId"),
            token_url=token_url,
            client_secret=client_secret,
            issuer=issuer,
            authorization_url=optional_url(data, "authorizationUrl"),
            device_authorization_url=optional_url(data, "deviceAuthorizationUrl"),
            revocation_url=optional_url(data, "revocationUrl"),
            jwks_uri=optional_url(data, "jwksUri"),
            private_key=private_key,
            private_key_id=private_key_id,
            auth_method=auth_method,
            grants=grants,
            scopes=_parse_scopes(data.get("scopes"), separator, "scopes"),
            user_scopes=(
                None
                if data.get("userScopes") is None
                else _parse_scopes(data["userScopes"], separator, "userScopes")
            ),
            scope_separator=separator,
            authorization_params=_parse_params(
                data.get("authorizationParams"),
                "authorizationParams",
                _RESERVED_AUTHORIZATION_PARAMS,
            ),
            token_params=_parse_params(
                data.get("tokenParams"), "tokenParams", _RESERVED_TOKEN_PARAMS
            ),
            audience_param=audience_param,
            description=optional_str(data, "description", max_length=1000),
        )
        settings._check_consistency()
        return settings

    def _check_consistency(self) -> None:
        if self.auth_method == "private_key_jwt" and self.private_key is None:
            raise InvalidRequest("privateKey is required for private_key_jwt", field="privateKey")
        if "jwt_bearer" in self.grants and self.private_key is None:
            raise InvalidRequest(
                "privateKey is required for the jwt_bearer grant (it signs the assertion)",
                field="privateKey",
            )
        if "authorization_code" in self.grants and not (self.authorization_url or self.issuer):
            raise InvalidRequest(
                "the authorization_code grant needs authorizationUrl or an issuer",
                field="authorizationUrl",
            )
        if "device_code" in self.grants and not (self.device_authorization_url or self.issuer):
            raise InvalidRequest(
                "the device_code grant needs deviceAuthorizationUrl or an issuer",
                field="deviceAuthorizationUrl",
            )
        if self.jwks_uri is not None and self.issuer is None:
            raise InvalidRequest(
                "jwksUri needs an issuer (ID tokens are checked against it)", field="jwksUri"
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
            "clientId": self.client_id,
            "authMethod": self.auth_method,
            "grants": list(self.grants),
            "scopes": list(self.scopes),
            "scopeSeparator": self.scope_separator,
        }
        optional = {
            "issuer": self.issuer,
            "tokenUrl": self.token_url,
            "authorizationUrl": self.authorization_url,
            "deviceAuthorizationUrl": self.device_authorization_url,
            "revocationUrl": self.revocation_url,
            "jwksUri": self.jwks_uri,
            "privateKeyId": self.private_key_id,
            "userScopes": None if self.user_scopes is None else list(self.user_scopes),
            "authorizationParams": dict(self.authorization_params) or None,
            "tokenParams": dict(self.token_params) or None,
            "audienceParam": self.audience_param,
            "description": self.description,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
        secrets = {"clientSecret": self.client_secret, "privateKey": self.private_key}
        return ValidatedConfig(
            config=config, secrets={k: v for k, v in secrets.items() if v is not None}
        )


def _secret(
    data: Mapping[str, Any],
    name: str,
    previous: ValidatedConfig | None,
    *,
    multiline: bool = False,
) -> str | None:
    """An optional secret; left out of an update, the stored one is kept (null clears it)."""
    if name not in data:
        return previous.secrets.get(name) if previous is not None else None
    value = data[name]
    if value is None:
        return None
    if multiline:
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequest(f"{name} must be a non-empty string", field=name)
        return value
    return optional_str(data, name)


def _vschar(value: str, field_name: str) -> str:
    if not _VSCHAR.match(value):
        raise InvalidRequest(
            f"{field_name} must be printable ASCII (RFC 6749 Appendix A)", field=field_name
        )
    return value


def _check_param_name(name: str, field_name: str, reserved: frozenset[str]) -> None:
    if not _PARAM_NAME.match(name):
        raise InvalidRequest(
            f"{field_name} must be a parameter name of letters, digits, '_', '.', ':' or '-'",
            field=field_name,
        )
    if name in reserved:
        raise InvalidRequest(
            f"{field_name} may not set the reserved parameter {name!r}", field=field_name
        )


def _parse_grants(value: object) -> tuple[Grant, ...]:
    if value is None:
        return ("client_credentials",)
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            f"grants must be a non-empty list of: {', '.join(GRANTS)}", field="grants"
        )
    seen: list[Grant] = []
    for grant in value:
        if grant not in GRANTS:
            raise InvalidRequest(
                f"unknown grant {grant!r}; known grants: {', '.join(GRANTS)}", field="grants"
            )
        if grant in seen:
            raise InvalidRequest(f"grant {grant!r} is listed twice", field="grants")
        seen.append(grant)
    return tuple(seen)


def _parse_scopes(value: object, separator: str, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_SCOPES:
        raise InvalidRequest(
            f"{field_name} must be a list of at most {_MAX_SCOPES} strings", field=field_name
        )
    seen: list[str] = []
    for scope in value:
        if not isinstance(scope, str) or not _SCOPE_TOKEN.match(scope) or separator in scope:
            raise InvalidRequest(
                "each scope must be a non-empty RFC 6749 scope token (no spaces, quotes, "
                "backslashes or the scope separator)",
                field=field_name,
            )
        if scope in seen:
            raise InvalidRequest(f"scope {scope!r} is listed twice", field=field_name)
        seen.append(scope)
    return tuple(seen)


def _parse_params(value: object, field_name: str, reserved: frozenset[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > 20:
        raise InvalidRequest(
            f"{field_name} must be an object of at most 20 entries", field=field_name
        )
    params: dict[str, str] = {}
    for name, param in value.items():
        if not isinstance(name, str):
            raise InvalidRequest(f"{field_name} names must be strings", field=field_name)
        _check_param_name(name, field_name, reserved)
        if not isinstance(param, str) or not param or len(param) > 2048:
            raise InvalidRequest(
                f"{field_name}[{name!r}] must be a non-empty string of at most 2048 characters",
                field=field_name,
            )
        params[name] = param
    return params
