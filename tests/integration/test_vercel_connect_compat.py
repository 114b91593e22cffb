"""Drop-in compatibility: the official ``vercel-connect`` package, unmodified, on a real broker.

The package is configured only through its public surface: a ``vercel.api.session`` scoped with
``ConnectServiceOptions(base_url=<broker>)``, and the Valetkey identity passed either per call
(``ConnectOptions(vercel_token=...)``) or for the whole session
(``ConnectServiceOptions(credentials_factory=...)``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from vercel.api import session
from vercel.connect import (
    ConnectApiError,
    ConnectAppTokenSubject,
    ConnectJwtBearerTokenSubject,
    ConnectNotFoundError,
    ConnectOptions,
    ConnectServiceOptions,
    ConnectTokenSubject,
    ConnectUserTokenSubject,
    delete_token_cache_entry,
    get_connector_metadata,
    get_token,
    get_token_response,
    revoke_token,
)
from vercel.connect import sync as connect_sync

from valetkey.testing import RunningBroker

SECRET = "sk-live-compat-0123456789"
APP = ConnectAppTokenSubject()


@dataclass(frozen=True)
class Tenant:
    """A provisioned project: its development identity and the connectors around it."""

    broker: RunningBroker
    identity: str

    def options(self, **kw: Any) -> ConnectOptions:
        return ConnectOptions(vercel_token=self.identity, **kw)

    def token_requests(self) -> int:
        with self.broker.admin() as c:
            counters: dict[str, int] = c.get("/v1/usage").json()["counters"]
        return counters.get("tokenRequests", 0)


def _ok(response: httpx2.Response) -> Any:
    assert response.status_code < 400, response.text
    return response.json()


def provision(broker: RunningBroker) -> Tenant:
    """``api-key/search`` linked for development (default policy: app only), plus one
    connector per refusal: unlinked, linked for production only, linked for app subjects only."""
    identity = broker.setup_project("agent", {"api-key/search": {"apiKey": SECRET}})
    with broker.admin() as c:
        for name in ("other", "prod-only", "app-only"):
            _ok(
                c.post(
                    "/v1/connectors",
                    json={"service": "api-key", "name": name, "data": {"apiKey": "sk-x"}},
                )
            )
        _ok(
            c.post(
                "/v1/connectors/api-key/prod-only/links",
                json={"project": "agent", "environments": ["production"]},
            )
        )
        _ok(
            c.post(
                "/v1/connectors/api-key/app-only/links",
                json={"project": "agent", "environments": ["development"], "subjects": ["app"]},
            )
        )
    return Tenant(broker, identity)


@pytest.fixture
def tenant(sqlite_broker: RunningBroker) -> Tenant:
    return provision(sqlite_broker)


@pytest.fixture
async def connect(tenant: Tenant) -> AsyncIterator[Tenant]:
    """An async SDK session of the official package pointed at the broker."""
    async with session(service_options=[ConnectServiceOptions(base_url=tenant.broker.url)]):
        yield tenant


@pytest.fixture
def connect_sync_session(tenant: Tenant) -> Iterator[Tenant]:
    """A sync SDK session of the official package pointed at the broker."""
    with session(service_options=[ConnectServiceOptions(base_url=tenant.broker.url)]):
        yield tenant


# -- tokens ------------------------------------------------------------------------------


async def test_get_token_and_response_on_each_store(broker: RunningBroker) -> None:
    """get_token returns the key; get_token_response parses expiresAt (epoch ms), tokenId and
    the connector reference, on SQLite and PostgreSQL."""
    tenant = provision(broker)
    before = datetime.now(UTC)
    async with session(service_options=[ConnectServiceOptions(base_url=broker.url)]):
        token = await get_token("api-key/search", subject=APP, options=tenant.options())
        response = await get_token_response(
            "api-key/search", subject=APP, options=tenant.options(no_cache=True)
        )
    assert token == SECRET
    assert response.token == SECRET
    assert response.expires_at.tzinfo is not None
    # A static key is re-checked by the broker after an hour: expiresAt is that horizon.
    assert before + timedelta(minutes=59) < response.expires_at < before + timedelta(minutes=61)
    assert response.token_id
    assert response.connector.uid == "api-key/search"
    assert response.connector.type == "api-key"
    assert response.connector.service == "api-key"
    assert response.connector.name == "search"
    assert response.connector.id
    assert response.metadata == {"expires": False}


async def test_identity_from_session_credentials_factory(tenant: Tenant) -> None:
    """The identity can be supplied once for the session instead of per call."""

    async def identity() -> str:
        return tenant.identity

    options = ConnectServiceOptions(base_url=tenant.broker.url, credentials_factory=identity)
    async with session(service_options=[options]):
        assert await get_token("api-key/search", subject=APP) == SECRET


def test_sync_surface(connect_sync_session: Tenant) -> None:
    """vercel.connect.sync gets tokens, reads metadata and revokes against the broker."""
    tenant = connect_sync_session
    assert connect_sync.get_token("api-key/search", subject=APP, options=tenant.options()) == SECRET
    response = connect_sync.get_token_response(
        "api-key/search", subject=APP, options=tenant.options(force_refresh=True)
    )
    assert response.token == SECRET
    assert response.connector.uid == "api-key/search"
    metadata = connect_sync.get_connector_metadata("api-key/search", options=tenant.options())
    assert metadata.uid == "api-key/search"
    connect_sync.revoke_token("api-key/search", subject=APP, options=tenant.options())
    again = connect_sync.get_token_response("api-key/search", subject=APP, options=tenant.options())
    assert again.token_id != response.token_id
    with pytest.raises(connect_sync.ConnectApiError) as info:
        connect_sync.get_token("api-key/other", subject=APP, options=tenant.options())
    assert (info.value.status_code, info.value.code) == (403, "forbidden")


# -- connector metadata ------------------------------------------------------------------


async def test_connector_metadata(connect: Tenant) -> None:
    """get_connector_metadata reads identity, timestamps and vendor data, and never the secret;
    Valetkey's extra fields (capabilities, environments, policy) land in ``extra``."""
    metadata = await get_connector_metadata("api-key/search", options=connect.options())
    assert (metadata.uid, metadata.type, metadata.service, metadata.name) == (
        "api-key/search",
        "api-key",
        "api-key",
        "search",
    )
    assert metadata.id
    assert metadata.created_at is not None
    assert metadata.created_at.tzinfo is not None
    assert metadata.updated_at is not None
    assert metadata.updated_at >= metadata.created_at
    assert SECRET not in repr(metadata.model_dump())
    assert metadata.extra["environments"] == ["development"]
    assert metadata.extra["policy"]["subjects"] == ["app"]
    assert "capabilities" in metadata.extra


async def test_connector_metadata_refusals(connect: Tenant) -> None:
    """Metadata of an unknown connector is ConnectNotFoundError; of an unlinked one, a 403."""
    with pytest.raises(ConnectNotFoundError) as missing:
        await get_connector_metadata("api-key/missing", options=connect.options())
    assert (missing.value.status_code, missing.value.code) == (404, "not_found")
    with pytest.raises(ConnectApiError) as unlinked:
        await get_connector_metadata("api-key/other", options=connect.options())
    assert (unlinked.value.status_code, unlinked.value.code) == (403, "forbidden")
    assert "connector is not linked to this project" in str(unlinked.value)
    assert unlinked.value.data["error"]["valetkeyCode"] == "connector_not_linked"  # type: ignore[index]


# -- revocation and the package's client-side cache --------------------------------------


async def test_client_cache_serves_repeats_without_a_call(connect: Tenant) -> None:
    """A repeat get_token is served by the package's cache (no broker call), as it expects."""
    first = await get_token_response("api-key/search", subject=APP, options=connect.options())
    calls = connect.token_requests()
    second = await get_token_response("api-key/search", subject=APP, options=connect.options())
    assert second.token_id == first.token_id
    assert connect.token_requests() == calls


async def test_revoke_token_then_next_call_is_fresh(connect: Tenant) -> None:
    """revoke_token succeeds (JSON counts body ignored by the package), evicts the package's
    cache for the subject, and the next get_token reaches the broker and gets a new issuance."""
    first = await get_token_response("api-key/search", subject=APP, options=connect.options())
    await revoke_token("api-key/search", subject=APP, options=connect.options())
    calls = connect.token_requests()
    second = await get_token_response("api-key/search", subject=APP, options=connect.options())
    assert connect.token_requests() == calls + 1
    assert second.token_id != first.token_id
    with connect.broker.admin() as c:
        events = _ok(c.get("/v1/audit", params={"decision": "allowed"}))
    assert any("revoke" in e["action"] for e in events)


async def test_revoked_elsewhere_surfaces_with_cache_eviction_or_force_refresh(
    connect: Tenant,
) -> None:
    """After an owner revokes server-side, delete_token_cache_entry or force_refresh makes the
    package call the broker again and receive a new issuance."""
    first = await get_token_response("api-key/search", subject=APP, options=connect.options())
    with connect.broker.admin() as c:
        counts = _ok(c.request("DELETE", "/v1/connect/connectors/api-key%2Fsearch/tokens", json={}))
    assert counts["tokensFound"] >= 1
    delete_token_cache_entry("api-key/search", subject=APP)
    calls = connect.token_requests()
    second = await get_token_response("api-key/search", subject=APP, options=connect.options())
    assert connect.token_requests() == calls + 1
    assert second.token_id != first.token_id
    with connect.broker.admin() as c:
        _ok(c.request("DELETE", "/v1/connect/connectors/api-key%2Fsearch/tokens", json={}))
    third = await get_token_response(
        "api-key/search", subject=APP, options=connect.options(force_refresh=True)
    )
    assert connect.token_requests() == calls + 2
    assert third.token_id not in {first.token_id, second.token_id}


async def test_revoke_unknown_connector_is_not_found(connect: Tenant) -> None:
    """revoke_token on an unknown connector raises the package's ConnectNotFoundError."""
    with pytest.raises(ConnectNotFoundError):
        await revoke_token("api-key/missing", subject=APP, options=connect.options())


# -- refusals as the package's typed errors ----------------------------------------------


@pytest.mark.parametrize(
    ("uid", "subject", "scopes", "code"),
    [
        ("api-key/other", APP, None, "forbidden"),
        ("api-key/prod-only", APP, None, "environment_not_linked"),
        ("api-key/search", ConnectJwtBearerTokenSubject(sub="alice"), None, "subject_not_allowed"),
        ("api-key/app-only", ConnectUserTokenSubject(id="alice"), None, "subject_not_allowed"),
        ("api-key/search", APP, ["admin"], "scope_not_allowed"),
    ],
    ids=["not-linked", "environment", "subject-type", "user-on-app-only-link", "scope"],
)
async def test_policy_refusals_are_connect_api_errors(
    connect: Tenant, uid: str, subject: ConnectTokenSubject, scopes: list[str] | None, code: str
) -> None:
    """Each policy refusal is the package's ConnectApiError carrying Valetkey's code and 403."""
    with pytest.raises(ConnectApiError) as info:
        await get_token(uid, subject=subject, scopes=scopes, options=connect.options())
    error = info.value
    assert type(error) is ConnectApiError
    assert (error.status_code, error.code) == (403, code)
    assert str(error).startswith(error.data["error"]["message"])  # type: ignore[index]
    assert f"code={code}" in str(error)


async def test_unknown_connector_is_not_found_error(connect: Tenant) -> None:
    """An unknown connector is the package's ConnectNotFoundError (404, not_found)."""
    with pytest.raises(ConnectNotFoundError) as info:
        await get_token("api-key/missing", subject=APP, options=connect.options())
    assert (info.value.status_code, info.value.code) == (404, "not_found")


@pytest.mark.parametrize(
    ("identity", "code"),
    [
        ("not-a-jwt", "malformed_token"),
        ("vk_at_" + "A" * 43, "token_revoked"),
    ],
)
async def test_bad_identity_is_a_401_connect_api_error(
    tenant: Tenant, identity: str, code: str
) -> None:
    """A bad identity is the package's ConnectApiError with status 401 and Valetkey's code."""
    async with session(service_options=[ConnectServiceOptions(base_url=tenant.broker.url)]):
        with pytest.raises(ConnectApiError) as info:
            await get_token(
                "api-key/search", subject=APP, options=ConnectOptions(vercel_token=identity)
            )
    assert (info.value.status_code, info.value.code) == (401, code)


async def test_access_token_identity_and_its_revocation(connect: Tenant) -> None:
    """A Valetkey access token works as the package's token; once revoked, a forced refresh
    is the package's 401 ConnectApiError."""
    with connect.broker.admin() as c:
        created = _ok(
            c.post("/v1/projects/agent/access-tokens", json={"environment": "development"})
        )
    options = ConnectOptions(vercel_token=created["token"])
    assert await get_token("api-key/search", subject=APP, options=options) == SECRET
    with connect.broker.admin() as c:
        _ok(c.delete(f"/v1/access-tokens/{created['id']}"))
    with pytest.raises(ConnectApiError) as info:
        await get_token(
            "api-key/search",
            subject=APP,
            options=ConnectOptions(vercel_token=created["token"], force_refresh=True),
        )
    assert (info.value.status_code, info.value.code) == (401, "token_revoked")


async def test_refusal_details_reach_the_package(connect: Tenant) -> None:
    """Valetkey's machine details (which environment, which are linked) are kept in ``.data``."""
    with pytest.raises(ConnectApiError) as info:
        await get_token("api-key/prod-only", subject=APP, options=connect.options())
    error = info.value.data["error"]  # type: ignore[index]
    assert error["environment"] == "development"
    assert error["linkedEnvironments"] == ["production"]
    assert info.value.request_id is None  # the broker sends no x-vercel-id


# -- connector ids and audience arrays, as the package sends them -----------------------


async def test_connector_addressed_by_id(connect: Tenant) -> None:
    """A connector can be addressed by its opaque id, as the package documents."""
    ref = (
        await get_token_response("api-key/search", subject=APP, options=connect.options())
    ).connector
    assert await get_token(ref.id, subject=APP, options=connect.options(no_cache=True)) == SECRET


async def test_multi_value_audience_is_parsed(connect: Tenant) -> None:
    """Two audiences reach the provider check (api-key: unsupported_operation), not a 400
    invalid_request that calls the array malformed."""
    with pytest.raises(ConnectApiError) as info:
        await get_token(
            "api-key/search",
            subject=APP,
            audience=["https://a.example", "https://b.example"],
            options=connect.options(),
        )
    assert info.value.code == "unsupported_operation"
