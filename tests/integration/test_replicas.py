"""Two broker processes on one PostgreSQL database behave as one broker.

Each replica keeps its own in-memory caches (verified identities, connector views,
provider tokens); a change made through one must reach the other's caches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from valetkey.testing import BrokerProcess, spawn_broker


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    """Two `valetkey serve` processes sharing a database and the same key files."""
    data = tmp_path / "data"
    # Replicas behind one load balancer share one public URL: it is the issuer of their dev identities.
    public = "http://valetkey.test"
    first = spawn_broker(data, database_url=postgres_url, public_url=public)
    second = spawn_broker(
        data, database_url=postgres_url, owner_token=first.handle.owner_token, public_url=public
    )
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def _token(url: str, identity: str, uid: str) -> httpx2.Response:
    return httpx2.post(
        f"{url}/v1/connect/token/{uid.replace('/', '%2F')}",
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {identity}"},
        timeout=10,
    )


def _eventually(check: object, timeout: float = 3.0) -> float:
    """Poll ``check`` until it returns True; return how long it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError("the other replica never saw the change")


def test_tokens_revoked_through_one_replica_are_not_served_from_the_others_cache(
    replicas: tuple[BrokerProcess, BrokerProcess],
) -> None:
    """After a revoke on replica A, replica B stops handing out the revoked token from its memory cache."""
    a, b = replicas[0].handle, replicas[1].handle
    identity = a.setup_project("agent", {"api-key/search": {"apiKey": "sk-shared"}})
    first = _token(b.url, identity, "api-key/search").json()["tokenId"]
    assert (
        _token(b.url, identity, "api-key/search").json()["tokenId"] == first
    )  # B serves from its cache
    assert (
        _token(a.url, identity, "api-key/search").json()["tokenId"] == first
    )  # A finds it in the shared store
    with a.admin() as c:
        revoked = c.request(
            "DELETE", "/v1/connect/connectors/api-key%2Fsearch/tokens", json={"allTokens": True}
        )
    assert revoked.json()["tokensFound"] == 1
    assert revoked.json()["deleted"] == 1
    _eventually(lambda: _token(b.url, identity, "api-key/search").json()["tokenId"] != first)


def test_access_token_revoked_through_one_replica_is_refused_by_the_other(
    replicas: tuple[BrokerProcess, BrokerProcess],
) -> None:
    """An access token verified and cached by replica B is refused by B once replica A revokes it."""
    a, b = replicas[0].handle, replicas[1].handle
    a.setup_project(
        "agent", {"api-key/search": {"apiKey": "sk-shared"}}, environments=("production",)
    )
    with a.admin() as c:
        created = c.post(
            "/v1/projects/agent/access-tokens", json={"environment": "production"}
        ).json()
    assert _token(b.url, created["token"], "api-key/search").status_code == 200
    with a.admin() as c:
        assert c.delete(f"/v1/access-tokens/{created['id']}").status_code == 200
    _eventually(lambda: _token(b.url, created["token"], "api-key/search").status_code == 401)


def test_connector_change_through_one_replica_reaches_the_other(
    replicas: tuple[BrokerProcess, BrokerProcess],
) -> None:
    """Detaching a connector through replica A makes replica B refuse it."""
    a, b = replicas[0].handle, replicas[1].handle
    identity = a.setup_project("agent", {"api-key/search": {"apiKey": "sk-shared"}})
    assert _token(b.url, identity, "api-key/search").status_code == 200
    with a.admin() as c:
        assert (
            c.post("/v1/connectors/api-key/search/detach", json={"project": "agent"}).status_code
            == 200
        )
    _eventually(lambda: _token(b.url, identity, "api-key/search").status_code == 403)


def test_member_revoked_through_one_replica_is_refused_by_the_other_at_once(
    replicas: tuple[BrokerProcess, BrokerProcess],
) -> None:
    """Member credentials are not cached: revoked or rotated on replica A, refused by B on the next request."""
    a, b = replicas[0].handle, replicas[1].handle
    with a.admin() as c:
        revoked = c.post("/v1/members", json={"name": "leaver"}).json()
        rotating = c.post("/v1/members", json={"name": "rotator"}).json()
    for member in (revoked, rotating):
        assert (
            httpx2.get(
                f"{b.url}/v1/me", headers={"authorization": f"Bearer {member['credential']}"}
            ).status_code
            == 200
        )
    with a.admin() as c:
        assert c.delete(f"/v1/members/{revoked['id']}").status_code == 200
    new = httpx2.post(
        f"{a.url}/v1/me/credential",
        json={},
        headers={"authorization": f"Bearer {rotating['credential']}"},
    ).json()["credential"]
    for old in (revoked["credential"], rotating["credential"]):
        assert (
            httpx2.get(f"{b.url}/v1/me", headers={"authorization": f"Bearer {old}"}).status_code
            == 401
        )
    assert (
        httpx2.get(f"{b.url}/v1/me", headers={"authorization": f"Bearer {new}"}).status_code == 200
    )
