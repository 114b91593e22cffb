"""Hostile provider URLs and numbers through the real broker: typed errors, never a 500.

A connector URL in a form parsers disagree on is refused when the connector is created or
updated, naming the field; a provider's absurd ``expires_in`` is cut or refused at mint time.
"""

from __future__ import annotations

import time

import httpx2
import pytest
from tests.peers.scripted import Reply, ScriptedServer, scripted_server

from valetkey.testing import RunningBroker

__all__ = ["scripted_server"]

URLS = [
    "https://0177.0.0.1/token",
    "https://0x7f.1/token",
    "https://2130706433/token",
    "https://127.1/token",
    "https://0177.1/token",
    "https://bücher.example/token",
    "https://xn--zz.example/token",
    "https://user@idp.example/token",
    "https://idp.example:99999/token",
    "https:///token",
    "https://evil.example\\@idp.example/token",
]


def _data(server: ScriptedServer, **changes: str) -> dict[str, str]:
    return {
        "tokenUrl": f"{server.url}/token",
        "clientId": "c",
        "clientSecret": "client-secret-0123",
        **changes,
    }


@pytest.mark.parametrize("field", ["tokenUrl", "revocationUrl"])
def test_bad_urls_are_refused_on_create_and_update(
    sqlite_broker: RunningBroker, scripted_server: ScriptedServer, field: str
) -> None:
    """Every form is a 400 invalid_request naming the field, on create and on update."""
    with sqlite_broker.admin() as c:
        made = c.post(
            "/v1/connectors",
            json={"service": "oauth", "name": "good", "data": _data(scripted_server)},
        )
        assert made.status_code == 201, made.text
        for url in URLS:
            for answer in (
                c.post(
                    "/v1/connectors",
                    json={
                        "service": "oauth",
                        "name": "bad",
                        "data": _data(scripted_server, **{field: url}),
                    },
                ),
                c.patch(
                    "/v1/connectors/oauth/good",
                    json={"data": _data(scripted_server, **{field: url})},
                ),
            ):
                assert answer.status_code == 400, (url, answer.text)
                error = answer.json()["error"]
                assert (error["code"], error["field"]) == ("invalid_request", field), url


@pytest.mark.parametrize(
    ("expires_in", "status"),
    [("1e20", 200), ("100000000000000000000000000000", 200), ("NaN", 502), ("-1", 502)],
)
def test_absurd_expires_in_is_cut_or_refused_at_mint_time(
    sqlite_broker: RunningBroker, scripted_server: ScriptedServer, expires_in: str, status: int
) -> None:
    """A lifetime of 1e20 seconds is served as at most a year; NaN or a negative is a 502 provider error."""
    body = (
        f'{{"access_token": "at-0123456789", "token_type": "Bearer", "scope": "read", '
        f'"expires_in": {expires_in}}}'
    )
    scripted_server.reply("/token", Reply(body=body.encode()))
    identity = sqlite_broker.setup_project(
        "nums", {"oauth/idp": {**_data(scripted_server), "scopes": ["read"]}}
    )
    answer = httpx2.post(
        f"{sqlite_broker.url}/v1/connect/token/oauth%2Fidp",
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {identity}"},
        timeout=30,
    )
    assert answer.status_code == status, answer.text
    if status == 200:
        expires_at = answer.json()["expiresAt"] / 1000
        assert time.time() < expires_at <= time.time() + 366 * 86400
    else:
        error = answer.json()["error"]
        assert (error["code"], error["error"]) == ("provider_error", "invalid_response")
