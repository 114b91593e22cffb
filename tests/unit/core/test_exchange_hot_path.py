"""The exchange asks a provider for a connector's capabilities once per connector view, not per request."""

from __future__ import annotations

import json

import httpx2
from exchange_helpers import IDENTITY, CountingProvider, build_exchange, connector_of, view_of

from valetkey.core.exchange_cache import VIEW_TTL
from valetkey.core.models import Connector, Subject, TokenRequest
from valetkey.core.ports import Invalidation
from valetkey.core.providers import Capabilities
from valetkey.providers.oauth import OAuthProvider

APP = TokenRequest(Subject("app"))
HITS = 50


async def test_cache_hits_ask_for_capabilities_once_per_view() -> None:
    """N cache-hit exchanges cost one capabilities() call; a reloaded view costs one more."""
    provider = CountingProvider()
    exchange = build_exchange(provider, view_of(connector_of("counting")))
    first = await exchange.service.exchange(IDENTITY, "counting/main", APP)
    assert not first.cached
    for _ in range(HITS):
        issued = await exchange.service.exchange(IDENTITY, "counting/main", APP)
        assert issued.cached
        assert issued.token == first.token
    assert provider.calls == {"capabilities": 1, "mint": 1}

    exchange.clock.advance(VIEW_TTL.total_seconds() + 1)  # the view is re-read from the store
    await exchange.service.exchange(IDENTITY, "counting/main", APP)
    assert provider.calls["capabilities"] == 2
    assert exchange.store.view_reads == 2

    await exchange.bus.publish(Invalidation(kind="connector", team_id=IDENTITY.team_id))
    await exchange.service.exchange(IDENTITY, "counting/main", APP)  # a changed connector
    assert provider.calls["capabilities"] == 3


class _CountingOAuth(OAuthProvider):
    """The real ``oauth`` provider, counting how often its settings are parsed for capabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.parses = 0

    def capabilities(self, connector: Connector) -> Capabilities:
        self.parses += 1
        return super().capabilities(connector)


async def test_oauth_settings_are_not_parsed_on_cache_hits() -> None:
    """For the oauth provider (whose capabilities parse the connector's settings), N cache hits
    after one client-credentials mint parse the settings for capabilities once."""
    minted: list[httpx2.Request] = []

    def token_endpoint(request: httpx2.Request) -> httpx2.Response:
        minted.append(request)
        body = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "scope": "read"}
        return httpx2.Response(
            200, content=json.dumps(body), headers={"content-type": "application/json"}
        )

    provider = _CountingOAuth()
    validated = provider.validate_config(
        {
            "tokenUrl": "https://idp.example/token",
            "clientId": "app",
            "clientSecret": "s3cret",
            "scopes": ["read"],
        }
    )
    connector = connector_of("oauth", validated.config, **validated.secrets)
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(token_endpoint)) as http:
        exchange = build_exchange(provider, view_of(connector), http=http)
        for _ in range(HITS + 1):
            issued = await exchange.service.exchange(IDENTITY, "oauth/main", APP)
            assert issued.token == "at-1"
    assert len(minted) == 1
    assert provider.parses == 1
