"""OAuth connector configuration: what is accepted, what is refused, and which field is named."""

from __future__ import annotations

from typing import Any

import pytest
from tests.peers.context import connector_for

from valetkey.core.providers import ValidatedConfig
from valetkey.errors import InvalidRequest
from valetkey.providers.oauth import OAuthProvider

SECRET = "client-secret-value"
GOOD: dict[str, Any] = {
    "tokenUrl": "https://auth.example.test/oauth/token",
    "clientId": "client-1",
    "clientSecret": SECRET,
}


def _with(**changes: Any) -> dict[str, Any]:
    data = {**GOOD, **changes}
    return {k: v for k, v in data.items() if v is not _DROP}


_DROP = object()


def test_minimal_config_gets_defaults_and_hides_the_secret() -> None:
    """Defaults are filled in, clientSecret goes to secrets only."""
    validated = OAuthProvider().validate_config(GOOD)
    assert validated.config == {
        "tokenUrl": GOOD["tokenUrl"],
        "clientId": "client-1",
        "authMethod": "client_secret_basic",
        "grants": ["client_credentials"],
        "scopes": [],
        "scopeSeparator": " ",
    }
    assert validated.secrets == {"clientSecret": SECRET}
    assert SECRET not in repr(validated)


def test_full_config_round_trips() -> None:
    """Every optional field is kept as given."""
    data = _with(
        authMethod="client_secret_post",
        scopes=["read", "write:all"],
        scopeSeparator=",",
        revocationUrl="https://auth.example.test/oauth/revoke",
        tokenParams={"audience": "https://api.example.test"},
        audienceParam="audience",
        description="Acme API",
        grants=["client_credentials", "authorization_code", "token_exchange"],
        issuer="https://auth.example.test/tenant",
        authorizationUrl="https://auth.example.test/oauth/authorize",
        deviceAuthorizationUrl="https://auth.example.test/oauth/device",
        jwksUri="https://auth.example.test/jwks",
        userScopes=["openid", "read"],
        authorizationParams={"prompt": "consent", "access_type": "offline"},
        privateKeyId="key-1",
    )
    validated = OAuthProvider().validate_config(data)
    expected = {k: v for k, v in data.items() if k != "clientSecret"}
    assert validated.config == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/token",
        "http://127.0.0.1:9/token",
        "http://[::1]:9/token",
        "https://auth.example.test/token?tenant=a",
    ],
)
def test_urls_accept_https_and_loopback_http(url: str) -> None:
    """https anywhere, plain http only to the loopback host."""
    assert OAuthProvider().validate_config(_with(tokenUrl=url)).config["tokenUrl"] == url


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tokenUrl": _DROP}, "tokenUrl"),
        ({"tokenUrl": ""}, "tokenUrl"),
        ({"tokenUrl": 5}, "tokenUrl"),
        ({"tokenUrl": "http://auth.example.test/token"}, "tokenUrl"),
        ({"tokenUrl": "http://10.0.0.1/token"}, "tokenUrl"),
        ({"tokenUrl": "http://127.0.0.2/token"}, "tokenUrl"),
        ({"tokenUrl": "ftp://auth.example.test/token"}, "tokenUrl"),
        ({"tokenUrl": "/relative/token"}, "tokenUrl"),
        ({"tokenUrl": "https://user:pw@auth.example.test/token"}, "tokenUrl"),
        ({"tokenUrl": "https://auth.example.test/token#frag"}, "tokenUrl"),
        ({"tokenUrl": "https://auth.example.test:99999/token"}, "tokenUrl"),
        ({"tokenUrl": "https://auth.example.test/\ntoken"}, "tokenUrl"),
        ({"clientId": _DROP}, "clientId"),
        ({"clientId": ""}, "clientId"),
        ({"clientId": ["a"]}, "clientId"),
        ({"clientId": "x" * 513}, "clientId"),
        ({"clientSecret": _DROP}, "clientSecret"),
        ({"clientSecret": ""}, "clientSecret"),
        ({"clientSecret": 1234}, "clientSecret"),
        ({"clientSecret": "s\u00e9cret"}, "clientSecret"),
        ({"clientId": "cl\u00efent"}, "clientId"),
        ({"authMethod": "private_key_jwt"}, "privateKey"),
        ({"authMethod": "client_secret_jwt"}, "authMethod"),
        ({"authMethod": None}, "authMethod"),
        ({"scopes": "read write"}, "scopes"),
        ({"scopes": ["read", "read"]}, "scopes"),
        ({"scopes": ["read write"]}, "scopes"),
        ({"scopes": [""]}, "scopes"),
        ({"scopes": ['say"hi']}, "scopes"),
        ({"scopes": [7]}, "scopes"),
        ({"scopes": ["a,b"], "scopeSeparator": ","}, "scopes"),
        ({"scopes": [f"s{i}" for i in range(201)]}, "scopes"),
        ({"scopeSeparator": ";"}, "scopeSeparator"),
        ({"scopeSeparator": ""}, "scopeSeparator"),
        ({"revocationUrl": "http://auth.example.test/revoke"}, "revocationUrl"),
        ({"revocationUrl": ""}, "revocationUrl"),
        ({"tokenParams": ["audience"]}, "tokenParams"),
        ({"tokenParams": {"audience": 5}}, "tokenParams"),
        ({"tokenParams": {"audience": ""}}, "tokenParams"),
        ({"tokenParams": {"grant_type": "password"}}, "tokenParams"),
        ({"tokenParams": {"client_secret": "x"}}, "tokenParams"),
        ({"tokenParams": {"scope": "admin"}}, "tokenParams"),
        ({"tokenParams": {"bad name": "x"}}, "tokenParams"),
        ({"tokenParams": {f"p{i}": "x" for i in range(21)}}, "tokenParams"),
        ({"audienceParam": "scope"}, "audienceParam"),
        ({"audienceParam": "has space"}, "audienceParam"),
        ({"description": 3}, "description"),
        ({"clientSecrt": "typo"}, "clientSecrt"),
        ({"issuer": "http://auth.example.test"}, "issuer"),
        ({"issuer": "https://auth.example.test/?tenant=a"}, "issuer"),
        ({"tokenUrl": _DROP, "issuer": None}, "tokenUrl"),
        ({"authorizationUrl": "http://auth.example.test/authorize"}, "authorizationUrl"),
        ({"deviceAuthorizationUrl": "ftp://auth.example.test/d"}, "deviceAuthorizationUrl"),
        ({"jwksUri": "https://auth.example.test/jwks"}, "jwksUri"),
        ({"grants": []}, "grants"),
        ({"grants": "client_credentials"}, "grants"),
        ({"grants": ["password"]}, "grants"),
        ({"grants": ["client_credentials", "client_credentials"]}, "grants"),
        ({"grants": ["authorization_code"]}, "authorizationUrl"),
        ({"grants": ["device_code"]}, "deviceAuthorizationUrl"),
        ({"grants": ["jwt_bearer"]}, "privateKey"),
        ({"userScopes": "openid"}, "userScopes"),
        ({"userScopes": ["a b"]}, "userScopes"),
        ({"privateKey": "not a pem"}, "privateKey"),
        ({"privateKey": 12}, "privateKey"),
        ({"authorizationParams": {"prompt": 1}}, "authorizationParams"),
        ({"authorizationParams": ["prompt"]}, "authorizationParams"),
    ],
)
def test_bad_fields_are_refused_by_name(changes: dict[str, Any], field: str) -> None:
    """Each bad, missing or unknown field is refused with its name, never with the secret."""
    with pytest.raises(InvalidRequest) as caught:
        OAuthProvider().validate_config(_with(**changes))
    assert caught.value.details["field"] == field
    assert SECRET not in caught.value.message
    assert SECRET not in repr(caught.value.to_wire())


@pytest.mark.parametrize(
    "name",
    [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
        "nonce",
        "resource",
        "request",
        "request_uri",
        "response_mode",
    ],
)
def test_reserved_authorization_params_are_refused(name: str) -> None:
    """authorizationParams may not set what the authorization request itself controls."""
    with pytest.raises(InvalidRequest) as caught:
        OAuthProvider().validate_config(_with(authorizationParams={name: "x"}))
    assert caught.value.details["field"] == "authorizationParams"
    assert repr(name) in caught.value.message


def test_config_that_is_not_an_object_is_refused() -> None:
    """A list or string payload is refused as a whole."""
    with pytest.raises(InvalidRequest) as caught:
        OAuthProvider().validate_config(["tokenUrl"])  # type: ignore[arg-type]
    assert caught.value.details["field"] == "config"


def test_update_without_the_secret_keeps_the_stored_one() -> None:
    """On update, clientSecret may be left out to keep the stored one; giving it replaces it."""
    provider = OAuthProvider()
    previous = provider.validate_config(GOOD)
    without = {k: v for k, v in GOOD.items() if k != "clientSecret"}
    kept = provider.validate_config({**without, "scopes": ["read"]}, previous)
    assert kept.secrets == {"clientSecret": SECRET}
    assert kept.config["scopes"] == ["read"]
    replaced = provider.validate_config({**without, "clientSecret": "rotated"}, previous)
    assert replaced.secrets == {"clientSecret": "rotated"}


def test_update_without_a_stored_secret_still_requires_it() -> None:
    """A previous config without the secret does not make it optional."""
    previous = ValidatedConfig(config={}, secrets={})
    without = {k: v for k, v in GOOD.items() if k != "clientSecret"}
    with pytest.raises(InvalidRequest):
        OAuthProvider().validate_config(without, previous)


def test_capabilities_follow_the_revocation_url() -> None:
    """Revocation is a capability only when a revocation endpoint is configured."""
    provider = OAuthProvider()
    plain = provider.capabilities(connector_for(provider, GOOD))
    assert plain.to_json() == {
        "subjects": ["app"],
        "scopable": True,
        "shortLived": True,
        "revocation": False,
    }
    revocable = connector_for(provider, _with(revocationUrl="https://auth.example.test/revoke"))
    assert provider.capabilities(revocable).revocation is True
