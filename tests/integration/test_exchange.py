"""The exchange end to end over HTTP, on SQLite and PostgreSQL: grants, refusals, audit, usage."""

from __future__ import annotations

import httpx2
import pytest

from valetkey.testing import RunningBroker


def _exchange(
    broker: RunningBroker, identity: str, uid: str, body: object, **kw: object
) -> httpx2.Response:
    encoded = uid.replace("/", "%2F")
    return httpx2.post(
        f"{broker.url}/v1/connect/token/{encoded}",
        json=body,
        headers={"authorization": f"Bearer {identity}"},
        timeout=10,
        **kw,  # type: ignore[arg-type]
    )


def _usage(broker: RunningBroker) -> dict[str, int]:
    with broker.admin() as c:
        counters: dict[str, int] = c.get("/v1/usage").json()["counters"]
        return counters


def _issued_count(broker: RunningBroker) -> int:
    with broker.admin() as c:
        events = c.get(
            "/v1/audit", params={"action": "token.exchange", "decision": "allowed"}
        ).json()
        return len(events)


def test_api_key_exchange_returns_the_key_and_records_it(broker: RunningBroker) -> None:
    """An attached api-key connector hands its key to a development identity, once per request counted."""
    identity = broker.setup_project("agent", {"api-key/search": {"apiKey": "sk-live-abc"}})
    first = _exchange(broker, identity, "api-key/search", {"subject": {"type": "app"}})
    second = _exchange(broker, identity, "api-key/search", {"subject": {"type": "app"}})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["token"] == "sk-live-abc"
    assert body["connector"]["uid"] == "api-key/search"
    assert body["metadata"] == {"expires": False}
    assert second.json()["tokenId"] == body["tokenId"]  # served from cache, one ledger row
    usage = _usage(broker)
    assert usage["tokenRequests"] == 2
    assert usage["tokensMinted"] == 1


def test_every_policy_refusal_has_its_own_code_and_changes_nothing(broker: RunningBroker) -> None:
    """Unknown connector, unlinked, wrong environment, wrong subject each answer a distinct code."""
    identity = broker.setup_project("agent", {"api-key/search": {"apiKey": "sk-1"}})
    with broker.admin() as c:
        assert (
            c.post(
                "/v1/connectors",
                json={"service": "api-key", "name": "other", "data": {"apiKey": "sk-2"}},
            ).status_code
            == 201
        )
        assert (
            c.post(
                "/v1/connectors",
                json={"service": "api-key", "name": "prod-only", "data": {"apiKey": "sk-3"}},
            ).status_code
            == 201
        )
        r = c.post(
            "/v1/connectors/api-key/prod-only/links",
            json={"project": "agent", "environments": ["production"]},
        )
        assert r.status_code == 200, r.text
    cases = [
        ("api-key/missing", {"subject": {"type": "app"}}, 404, "not_found"),
        ("api-key/other", {"subject": {"type": "app"}}, 403, "connector_not_linked"),
        ("api-key/prod-only", {"subject": {"type": "app"}}, 403, "environment_not_linked"),
        (
            "api-key/search",
            {"subject": {"type": "user", "id": "alice"}},
            403,
            "subject_not_allowed",
        ),
        (
            "api-key/search",
            {"subject": {"type": "app"}, "scopes": ["admin"]},
            403,
            "scope_not_allowed",
        ),
    ]
    before = _usage(broker)
    for uid, body, status, code in cases:
        r = _exchange(broker, identity, uid, body)
        error = r.json()["error"]
        # The precise code is valetkeyCode where the official clients' own code differs (forbidden).
        assert (r.status_code, error.get("valetkeyCode", error["code"])) == (status, code), r.text
    assert _usage(broker) == before
    assert _issued_count(broker) == 0
    with broker.admin() as c:
        denied = c.get("/v1/audit", params={"decision": "denied"}).json()
    assert sorted(e["reason"] for e in denied) == sorted(code for *_, code in cases)


def test_environment_refusal_names_the_environments(sqlite_broker: RunningBroker) -> None:
    """A refusal for the wrong environment says which environment was asked and which are linked."""
    broker = sqlite_broker
    identity = broker.setup_project(
        "agent", {"api-key/k": {"apiKey": "x"}}, environments=("production",)
    )
    error = _exchange(broker, identity, "api-key/k", {"subject": {"type": "app"}}).json()["error"]
    assert error["environment"] == "development"
    assert error["linkedEnvironments"] == ["production"]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "invalid_identity"),
        ({"authorization": "Basic abc"}, "invalid_identity"),
        ({"authorization": "Bearer not-a-jwt"}, "malformed_token"),
        ({"authorization": "Bearer vk_at_unknown"}, "malformed_token"),
        ({"authorization": "Bearer vk_at_" + "A" * 43}, "token_revoked"),
    ],
)
def test_bad_identities_are_refused(
    sqlite_broker: RunningBroker, headers: dict[str, str], code: str
) -> None:
    """A missing, malformed or unknown identity is a 401 with its own code."""
    sqlite_broker.setup_project("agent", {"api-key/k": {"apiKey": "x"}})
    r = httpx2.post(
        f"{sqlite_broker.url}/v1/connect/token/api-key%2Fk",
        json={"subject": {"type": "app"}},
        headers=headers,
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", None),
        (b"[1,2]", None),
        (b"{}", "subject"),
        (b'{"subject": {"type": "robot"}}', "subject.type"),
        (b'{"subject": {"type": "user"}}', "subject.id"),
        (b'{"subject": {"type": "app"}, "scopes": "a b"}', "scopes"),
        (b'{"subject": {"type": "app"}, "scopes": [1]}', "scopes"),
        (b'{"subject": {"type": "app"}, "surprise": 1}', "surprise"),
        (b'{"subject": {"type": "app", "id": "x"}}', "subject"),
    ],
)
def test_malformed_bodies_are_refused_with_the_field(
    sqlite_broker: RunningBroker, body: bytes, field: str | None
) -> None:
    """A malformed request body is a 400 invalid_request naming the field, and counts nothing."""
    identity = sqlite_broker.setup_project("agent", {"api-key/k": {"apiKey": "x"}})
    r = httpx2.post(
        f"{sqlite_broker.url}/v1/connect/token/api-key%2Fk",
        content=body,
        headers={"authorization": f"Bearer {identity}", "content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    if field:
        assert error["field"] == field
    assert _usage(sqlite_broker) == {}


def test_oversized_body_is_refused(sqlite_broker: RunningBroker) -> None:
    """A body over the limit is refused with 413 before it is parsed."""
    identity = sqlite_broker.setup_project("agent", {"api-key/k": {"apiKey": "x"}})
    r = httpx2.post(
        f"{sqlite_broker.url}/v1/connect/token/api-key%2Fk",
        content=b"{" + b" " * (2 << 20) + b"}",
        headers={"authorization": f"Bearer {identity}", "content-type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


def test_secrets_never_leave_through_the_management_api(sqlite_broker: RunningBroker) -> None:
    """Connector listings show which fields are secret, never their values."""
    sqlite_broker.setup_project("agent", {"api-key/k": {"apiKey": "sk-never-shown"}})
    with sqlite_broker.admin() as c:
        listing = (
            c.get("/v1/connectors").text
            + c.get("/v1/connectors/api-key/k").text
            + c.get("/v1/audit").text
        )
    assert "sk-never-shown" not in listing
    assert '"secretFields":["apiKey"]' in listing.replace(" ", "")


def test_access_token_identity_limited_to_app_and_its_user(sqlite_broker: RunningBroker) -> None:
    """An access token works for its environment, only for app subjects (or its own user), and stops on revoke."""
    broker = sqlite_broker
    broker.setup_project("agent", {"api-key/k": {"apiKey": "x"}}, environments=("production",))
    with broker.admin() as c:
        created = c.post(
            "/v1/projects/agent/access-tokens", json={"environment": "production"}
        ).json()
    token = created["token"]
    assert token.startswith("vk_at_")
    assert _exchange(broker, token, "api-key/k", {"subject": {"type": "app"}}).status_code == 200
    with broker.admin() as c:
        listed = c.get("/v1/access-tokens").text
        assert token not in listed
        assert c.delete(f"/v1/access-tokens/{created['id']}").status_code == 200
    refused = _exchange(broker, token, "api-key/k", {"subject": {"type": "app"}})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "token_revoked"


def test_development_identity_cannot_reach_production(sqlite_broker: RunningBroker) -> None:
    """A development identity resolves to development only: a production-only link refuses it."""
    broker = sqlite_broker
    identity = broker.setup_project(
        "agent", {"api-key/k": {"apiKey": "x"}}, environments=("production",)
    )
    r = _exchange(broker, identity, "api-key/k", {"subject": {"type": "app"}})
    assert r.json()["error"]["code"] == "environment_not_linked"
