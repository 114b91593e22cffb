"""The api-key provider: a static secret, handed out as is and never narrowed."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from tests.peers.context import TestContext, connector_for

from valetkey.core.models import Subject, TokenRequest
from valetkey.core.providers import MintedToken, ValidatedConfig
from valetkey.errors import InvalidRequest, ProviderError, UnsupportedOperation
from valetkey.providers.api_key import ApiKeyProvider

APP = Subject("app")
KEY = "sk_live_0123456789abcdef"


@pytest.fixture
async def ctx() -> AsyncIterator[TestContext]:
    async with httpx2.AsyncClient() as http:
        yield TestContext(http)


def test_config_keeps_the_key_secret_and_the_rest_visible() -> None:
    """apiKey goes to secrets; header and description stay in the shown config."""
    validated = ApiKeyProvider().validate_config(
        {"apiKey": KEY, "header": "X-Api-Key", "description": "search"}
    )
    assert validated.secrets == {"apiKey": KEY}
    assert validated.config == {"header": "X-Api-Key", "description": "search"}
    assert KEY not in repr(validated)


def test_config_defaults_the_header_to_authorization() -> None:
    """Without a header, the key is meant for the Authorization header."""
    assert ApiKeyProvider().validate_config({"apiKey": KEY}).config == {"header": "Authorization"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "apiKey"),
        ({"apiKey": ""}, "apiKey"),
        ({"apiKey": 42}, "apiKey"),
        ({"apiKey": "line\nbreak"}, "apiKey"),
        ({"apiKey": "k" * 5000}, "apiKey"),
        ({"apiKey": KEY, "header": "Bad Header"}, "header"),
        ({"apiKey": KEY, "header": "X-Key:"}, "header"),
        ({"apiKey": KEY, "header": 7}, "header"),
        ({"apiKey": KEY, "description": ""}, "description"),
        ({"apiKey": KEY, "scopes": ["read"]}, "scopes"),
    ],
)
def test_config_refuses_bad_fields_by_name(data: dict[str, Any], field: str) -> None:
    """Each bad or unknown field is refused, and the error names it without echoing the key."""
    with pytest.raises(InvalidRequest) as caught:
        ApiKeyProvider().validate_config(data)
    assert caught.value.details["field"] == field
    assert "line\nbreak" not in caught.value.message


def test_config_update_without_the_key_keeps_the_stored_one() -> None:
    """On update, leaving apiKey out keeps the stored secret; giving one replaces it."""
    provider = ApiKeyProvider()
    previous = ValidatedConfig(config={"header": "Authorization"}, secrets={"apiKey": KEY})
    kept = provider.validate_config({"header": "X-Api-Key"}, previous)
    assert kept.secrets == {"apiKey": KEY}
    assert kept.config["header"] == "X-Api-Key"
    assert provider.validate_config({"apiKey": "new"}, previous).secrets == {"apiKey": "new"}


def test_capabilities_say_static_and_unscoped() -> None:
    """The provider declares itself neither short-lived, scopable nor revocable."""
    provider = ApiKeyProvider()
    caps = provider.capabilities(connector_for(provider, {"apiKey": KEY}))
    assert caps.to_json() == {
        "subjects": ["app"],
        "scopable": False,
        "shortLived": False,
        "revocation": False,
    }


async def test_mint_returns_the_key_unchanged_without_expiry(ctx: TestContext) -> None:
    """The minted credential is the stored key itself, not expiring, with its header."""
    provider = ApiKeyProvider()
    connector = connector_for(provider, {"apiKey": KEY, "header": "X-Api-Key"})
    minted = await provider.mint(ctx, connector, TokenRequest(subject=APP))
    assert minted.token == KEY
    assert minted.expires_at is None
    assert minted.metadata == {"header": "X-Api-Key"}
    assert KEY not in repr(minted)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"scopes": ("read",)}, "scopes"),
        ({"scopes": ()}, "scopes"),
        ({"resources": ("https://api.example.test",)}, "resources"),
        ({"audience": "https://api.example.test"}, "audience"),
    ],
)
async def test_mint_refuses_any_narrowing(
    ctx: TestContext, request_fields: dict[str, Any], field: str
) -> None:
    """Asking to narrow a static key is refused, never answered with the unnarrowed key."""
    provider = ApiKeyProvider()
    connector = connector_for(provider, {"apiKey": KEY})
    with pytest.raises(UnsupportedOperation) as caught:
        await provider.mint(ctx, connector, TokenRequest(subject=APP, **request_fields))
    assert caught.value.message == "api-key connectors hold a static secret: it cannot be narrowed"
    assert caught.value.details["field"] == field


async def test_mint_refuses_user_subjects(ctx: TestContext) -> None:
    """An API key acts as the app; a user subject is not something it can serve."""
    provider = ApiKeyProvider()
    connector = connector_for(provider, {"apiKey": KEY})
    with pytest.raises(UnsupportedOperation):
        await provider.mint(ctx, connector, TokenRequest(subject=Subject("user", "u1")))


async def test_mint_without_a_stored_key_is_a_provider_error(ctx: TestContext) -> None:
    """A connector whose secret is missing fails loudly instead of handing out nothing."""
    provider = ApiKeyProvider()
    connector = connector_for(provider, {"apiKey": KEY})
    broken = dataclasses.replace(connector, secrets={})
    with pytest.raises(ProviderError):
        await provider.mint(ctx, broken, TokenRequest(subject=APP))


async def test_revoke_is_skipped(ctx: TestContext) -> None:
    """Valetkey cannot revoke an API key at the provider, and says so."""
    provider = ApiKeyProvider()
    connector = connector_for(provider, {"apiKey": KEY})
    result = await provider.revoke(ctx, connector, MintedToken(token=KEY, expires_at=None))
    assert result.skipped is True
    assert result.revoked is False
