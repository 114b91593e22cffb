"""The management wire's one representation of time (ISO 8601 text in UTC) and its camelCase
keys, on every resource that carries a time; the Connect wire keeps Vercel's epoch milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2

from valetkey.testing import RunningBroker


def _ok(response: httpx2.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


def _utc(value: Any) -> datetime:
    """``value`` is ISO 8601 text with a UTC offset."""
    assert isinstance(value, str), value
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0), value
    return moment


def test_every_management_time_is_iso_utc_text(broker: RunningBroker) -> None:
    """Members, projects, connectors, trust bindings, access tokens, audit events and the
    development identity all give their times as ISO 8601 UTC strings, and usage metrics are
    camelCase keys, while a Connect token response keeps epoch milliseconds."""
    identity = broker.setup_project("wire", {"api-key/wire": {"apiKey": "sk-wire"}})
    exchanged = httpx2.post(
        f"{broker.url}/v1/connect/token/api-key/wire",
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {identity}"},
    )
    assert exchanged.status_code == 200, exchanged.text
    with broker.admin() as c:
        now = datetime.now(UTC)
        for member in _ok(c.get("/v1/members")):
            assert abs(_utc(member["createdAt"]) - now) < timedelta(hours=1)
        for project in _ok(c.get("/v1/projects")):
            _utc(project["createdAt"])
        connector = _ok(c.get("/v1/connectors/api-key/wire"))
        assert _utc(connector["createdAt"]) <= _utc(connector["updatedAt"])
        binding = _ok(
            c.post(
                "/v1/projects/wire/trust-bindings",
                json={
                    "environment": "development",
                    "issuer": "https://ci.example.com",
                    "audience": "valetkey:default",
                    "claims": {"sub": "repo:acme/app"},
                },
            )
        )
        _utc(binding["createdAt"])
        token = _ok(
            c.post(
                "/v1/projects/wire/access-tokens",
                json={"environment": "development", "expiresInSeconds": 3600},
            )
        )
        assert abs(_utc(token["expiresAt"]) - now - timedelta(hours=1)) < timedelta(minutes=5)
        listed = _ok(c.get("/v1/access-tokens"))[0]
        _utc(listed["createdAt"])
        dev = _ok(c.post("/v1/projects/wire/development-identity", json={"ttlSeconds": 3600}))
        assert abs(_utc(dev["expiresAt"]) - now - timedelta(hours=1)) < timedelta(minutes=5)
        for event in _ok(c.get("/v1/audit")):
            _utc(event["at"])
        counters = _ok(c.get("/v1/usage"))["counters"]
        assert counters["tokenRequests"] >= 1
        assert all("_" not in name for name in counters), counters
    assert isinstance(exchanged.json()["expiresAt"], int)  # Connect: epoch milliseconds
