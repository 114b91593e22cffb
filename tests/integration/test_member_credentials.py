"""Member credentials end: revoked by an owner, rotated by their holder, expired by their lifetime,
and the team never loses its last owner — through the real broker, on each store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from sqlalchemy import select, update

from valetkey.errors import LastOwner
from valetkey.store import tables as t
from valetkey.testing import RunningBroker


def _ok(response: httpx2.Response) -> Any:
    assert response.status_code < 400, (response.request.url.path, response.text)
    return response.json()


def _as(broker: RunningBroker, credential: str) -> httpx2.Client:
    return httpx2.Client(
        base_url=broker.url, headers={"authorization": f"Bearer {credential}"}, timeout=30
    )


def _create(broker: RunningBroker, name: str, role: str = "member", **body: Any) -> dict[str, Any]:
    with broker.admin() as c:
        created: dict[str, Any] = _ok(
            c.post("/v1/members", json={"name": name, "role": role, **body})
        )
    return created


def _error(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


def test_revoked_member_is_refused_at_once_and_listed_no_more(broker: RunningBroker) -> None:
    """DELETE /v1/members/{id} ends every credential of the member on the next request."""
    alice = _create(broker, "alice")
    with _as(broker, alice["credential"]) as c:
        assert _ok(c.get("/v1/me"))["name"] == "alice"
    with broker.admin() as c:
        assert _ok(c.delete(f"/v1/members/{alice['id']}")) == {
            "id": alice["id"],
            "name": "alice",
            "revoked": True,
        }
        assert "alice" not in [m["name"] for m in _ok(c.get("/v1/members"))]
        _error(c.delete(f"/v1/members/{alice['id']}"), 404, "not_found")
    with _as(broker, alice["credential"]) as c:
        for method, path in (
            ("GET", "/v1/me"),
            ("GET", "/v1/projects"),
            ("POST", "/v1/me/credential"),
        ):
            _error(
                c.request(method, path, json={} if method == "POST" else None),
                401,
                "invalid_identity",
            )


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_owners_revoke_members(broker: RunningBroker, role: str) -> None:
    """A member or viewer cannot revoke anyone (themselves included); nothing changes."""
    actor = _create(broker, f"actor-{role}", role)
    target = _create(broker, f"target-{role}")
    with _as(broker, actor["credential"]) as c:
        for victim in (target["id"], actor["id"]):
            _error(c.delete(f"/v1/members/{victim}"), 403, "forbidden")
    with _as(broker, target["credential"]) as c:
        assert c.get("/v1/me").status_code == 200


def test_the_last_owner_cannot_be_revoked(broker: RunningBroker) -> None:
    """An owner alone cannot revoke itself; with two owners one may go, then the other is the last."""
    with broker.admin() as c:
        me = _ok(c.get("/v1/me"))
        error = _error(c.delete(f"/v1/members/{me['member']}"), 409, "last_owner")
        assert "owner" in error["message"]
    second = _create(broker, "second-owner", "owner")
    with _as(broker, second["credential"]) as c:
        _ok(c.delete(f"/v1/members/{me['member']}"))
        _error(c.delete(f"/v1/members/{second['id']}"), 409, "last_owner")
        assert _ok(c.get("/v1/me"))["role"] == "owner"


def test_two_owners_revoking_each_other_at_once_leave_one(broker: RunningBroker) -> None:
    """Owners revoking each other concurrently: exactly one revocation wins, the other is refused
    with last_owner, and the team keeps one owner (several rounds)."""
    m = broker.broker.services.members
    for round_ in range(4):
        left = _create(broker, f"left-{round_}", "owner")
        right = _create(broker, f"right-{round_}", "owner")
        with broker.admin() as c:
            me = _ok(c.get("/v1/me"))
            _ok(c.delete(f"/v1/members/{me['member']}"))  # only left and right own the team now

        async def duel(left: dict[str, Any] = left, right: dict[str, Any] = right) -> list[Any]:
            a = await m.authenticate(left["credential"])
            b = await m.authenticate(right["credential"])
            return list(
                await asyncio.gather(
                    m.revoke_member(a, right["id"]),
                    m.revoke_member(b, left["id"]),
                    return_exceptions=True,
                )
            )

        results = broker.run(duel())
        assert sorted(type(r).__name__ for r in results) == ["LastOwner", "MemberRevoked"], results
        assert any(isinstance(r, LastOwner) for r in results)
        survivor = left if isinstance(results[1], LastOwner) else right
        with _as(broker, survivor["credential"]) as c:
            owners = [m_ for m_ in _ok(c.get("/v1/members")) if m_["role"] == "owner"]
        assert [o["id"] for o in owners] == [survivor["id"]]
        broker.owner_token = survivor["credential"]


def test_rotation_replaces_the_presented_credential_at_once(broker: RunningBroker) -> None:
    """POST /v1/me/credential returns a new credential once; the old one is refused on the next request,
    other members are untouched, and the lifetime carries over unless given."""
    bob = _create(broker, "bob", "viewer", expiresInSeconds=3600)
    with _as(broker, bob["credential"]) as c:
        rotated = _ok(c.post("/v1/me/credential", json={}))
        _error(c.get("/v1/me"), 401, "invalid_identity")
    assert rotated["credential"] != bob["credential"]
    assert rotated["credential"].startswith("vk_pt_")
    assert (rotated["id"], rotated["name"], rotated["role"]) == (bob["id"], "bob", "viewer")
    lifetime = datetime.fromisoformat(rotated["expiresAt"]) - datetime.now(UTC)
    assert timedelta(minutes=55) < lifetime <= timedelta(hours=1)
    with _as(broker, rotated["credential"]) as c:
        assert _ok(c.get("/v1/me"))["name"] == "bob"
        again = _ok(c.post("/v1/me/credential", json={"expiresInSeconds": 120}))
    lifetime = datetime.fromisoformat(again["expiresAt"]) - datetime.now(UTC)
    assert timedelta(seconds=60) < lifetime <= timedelta(seconds=120)
    with broker.admin() as c:
        assert _ok(c.get("/v1/me"))["role"] == "owner"
        listed = {m["name"]: m for m in _ok(c.get("/v1/members"))}
    assert listed["bob"]["expiresAt"] == again["expiresAt"]


def test_an_expired_credential_is_refused_with_a_clear_error(broker: RunningBroker) -> None:
    """A credential past its expiry is refused with token_expired, saying when and what to do."""
    carol = _create(broker, "carol", expiresInSeconds=60)
    assert carol["expiresAt"] is not None
    with _as(broker, carol["credential"]) as c:
        assert c.get("/v1/me").status_code == 200

    async def expire() -> None:  # the broker's clock is the system's: move the expiry instead
        async with broker.broker.db.session.begin() as s:
            await s.execute(
                update(t.MemberCredential)
                .where(t.MemberCredential.member_id == carol["id"])
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )

    broker.run(expire())
    with _as(broker, carol["credential"]) as c:
        for method, path in (
            ("GET", "/v1/me"),
            ("POST", "/v1/projects"),
            ("POST", "/v1/me/credential"),
        ):
            error = _error(
                c.request(method, path, json={"slug": "x"} if path == "/v1/projects" else None),
                401,
                "token_expired",
            )
            assert "expired" in error["message"]
            assert "expiredAt" in error


@pytest.mark.parametrize("ttl", [0, 59, -5, 10**12, "3600", True, 3600.5])
def test_credential_lifetimes_out_of_range_are_refused(broker: RunningBroker, ttl: Any) -> None:
    """expiresInSeconds must be an integer from 60 to two years, at creation and at rotation."""
    with broker.admin() as c:
        response = c.post("/v1/members", json={"name": "dave", "expiresInSeconds": ttl})
        assert response.status_code == 400, response.text
        assert "dave" not in [m["name"] for m in _ok(c.get("/v1/members"))]
        assert c.post("/v1/me/credential", json={"expiresInSeconds": ttl}).status_code == 400
        assert c.get("/v1/me").status_code == 200


def test_last_use_is_recorded_at_most_once_a_minute(broker: RunningBroker) -> None:
    """lastUsedAt appears after the first use and is not rewritten by uses within the minute."""
    erin = _create(broker, "erin")
    with broker.admin() as c:
        listed = {m["name"]: m for m in _ok(c.get("/v1/members"))}
    assert listed["erin"]["lastUsedAt"] is None
    with _as(broker, erin["credential"]) as c:
        for _ in range(5):
            assert c.get("/v1/me").status_code == 200

    async def last_used() -> datetime | None:
        async with broker.broker.db.session() as s:
            return await s.scalar(
                select(t.MemberCredential.last_used_at).where(
                    t.MemberCredential.member_id == erin["id"]
                )
            )

    first = broker.run(last_used())
    assert first is not None
    with _as(broker, erin["credential"]) as c:
        assert c.get("/v1/me").status_code == 200
    assert broker.run(last_used()) == first
    with broker.admin() as c:
        listed = {m["name"]: m for m in _ok(c.get("/v1/members"))}
    assert datetime.fromisoformat(listed["erin"]["lastUsedAt"]) == first


def test_another_teams_owner_cannot_revoke_this_teams_members(broker: RunningBroker) -> None:
    """An owner of team B naming a member id of team A gets not_found, and A's member keeps working."""
    frank = _create(broker, "frank")
    other = broker.run(broker.broker.services.members.create_team("team-b"))
    with _as(broker, other.owner_token) as c:
        _error(c.delete(f"/v1/members/{frank['id']}"), 404, "not_found")
        assert "frank" not in c.get("/v1/members").text
    with _as(broker, frank["credential"]) as c:
        assert c.get("/v1/me").status_code == 200
