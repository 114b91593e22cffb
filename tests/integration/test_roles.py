"""Every route that takes a member credential, called by every kind of caller: allowed exactly when
``valetkey.server.roles.ROUTE_ROLES`` says so, refused with the typed error otherwise, and a refused
request changes nothing. Another team's owner never sees nor changes this team's objects.

A route without a declared role cannot be built (``check_routes``); a declared route without a
recipe here fails ``test_every_declared_route_has_a_recipe``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from sqlalchemy import update

from valetkey.core.models import Role
from valetkey.server.roles import NO_MEMBER_CREDENTIAL, ROUTE_ROLES, check_routes
from valetkey.store import tables as t
from valetkey.testing import RunningBroker

OAUTH = {
    "tokenUrl": "http://127.0.0.1:9/token",  # never contacted
    "authorizationUrl": "http://127.0.0.1:9/authorize",
    "clientId": "walk-client",
    "clientSecret": "walk-secret",
    "grants": ["authorization_code", "client_credentials"],
    "scopes": ["read"],
}
PRINCIPALS = ("owner", "member", "viewer", "none", "revoked", "expired", "other-team")


def _ok(response: httpx2.Response) -> Any:
    assert response.status_code < 400, (response.request.url.path, response.text)
    return response.json()


@dataclass
class Walk:
    """Team A's broker, its owner, and a counter for fresh names."""

    broker: RunningBroker
    counter: Iterator[int] = field(default_factory=itertools.count)

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self.counter)}"

    def owner(self) -> httpx2.Client:
        return self.broker.admin()

    def connector(self, *, attach: bool = False) -> str:
        name = self.fresh("k")
        with self.owner() as c:
            _ok(
                c.post(
                    "/v1/connectors",
                    json={"service": "api-key", "name": name, "data": {"apiKey": "sk-walk"}},
                )
            )
            if attach:
                _ok(
                    c.post(
                        f"/v1/connectors/api-key/{name}/links",
                        json={"project": "walk", "environments": ["development"]},
                    )
                )
        return f"api-key/{name}"

    def dead_job(self) -> str:
        """A fresh dead-lettered job of team A (a kind no handler knows: a redelivery fails again)."""
        b = self.broker
        with self.owner() as c:
            team = str(_ok(c.get("/v1/me"))["team"])

        async def make() -> str:
            job_id: str = await b.broker.jobs.enqueue(
                "walk", {}, team_id=team, run_at=datetime.now(UTC) + timedelta(days=1)
            )
            async with b.broker.db.session.begin() as s:
                await s.execute(
                    update(t.Job).where(t.Job.id == job_id).values(status="dead", attempts=10)
                )
            return job_id

        return b.run(make())

    def made(self, path: str, body: dict[str, Any]) -> str:
        with self.owner() as c:
            made: dict[str, Any] = _ok(c.post(path, json=body))
        return str(made["id"])


Request = tuple[str, str, Any]
Recipe = Callable[[Walk], Request]

#: A valid request for each declared route, made against team A's objects (fresh where the
#: request destroys or changes what it names).
RECIPES: dict[tuple[str, str], Recipe] = {
    ("GET", "/v1/me"): lambda w: ("GET", "/v1/me", None),
    ("POST", "/v1/me/credential"): lambda w: ("POST", "/v1/me/credential", {}),
    ("GET", "/v1/members"): lambda w: ("GET", "/v1/members", None),
    ("POST", "/v1/members"): lambda w: ("POST", "/v1/members", {"name": w.fresh("m")}),
    ("DELETE", "/v1/members/{member_id}"): lambda w: (
        "DELETE",
        f"/v1/members/{w.made('/v1/members', {'name': w.fresh('gone')})}",
        None,
    ),
    ("GET", "/v1/projects"): lambda w: ("GET", "/v1/projects", None),
    ("POST", "/v1/projects"): lambda w: ("POST", "/v1/projects", {"slug": w.fresh("p")}),
    ("GET", "/v1/projects/{project}"): lambda w: ("GET", "/v1/projects/walk", None),
    ("GET", "/v1/projects/{project}/environments"): lambda w: (
        "GET",
        "/v1/projects/walk/environments",
        None,
    ),
    ("POST", "/v1/projects/{project}/environments"): lambda w: (
        "POST",
        "/v1/projects/walk/environments",
        {"slug": w.fresh("e")},
    ),
    ("POST", "/v1/projects/{project}/development-identity"): lambda w: (
        "POST",
        "/v1/projects/walk/development-identity",
        {},
    ),
    ("GET", "/v1/connectors"): lambda w: ("GET", "/v1/connectors", None),
    ("POST", "/v1/connectors"): lambda w: (
        "POST",
        "/v1/connectors",
        {"service": "api-key", "name": w.fresh("k"), "data": {"apiKey": "sk-new"}},
    ),
    ("GET", "/v1/connectors/{uid:path}"): lambda w: ("GET", "/v1/connectors/api-key/walk", None),
    ("PATCH", "/v1/connectors/{uid:path}"): lambda w: (
        "PATCH",
        f"/v1/connectors/{w.connector()}",
        {"data": {"apiKey": "sk-changed"}},
    ),
    ("DELETE", "/v1/connectors/{uid:path}"): lambda w: (
        "DELETE",
        f"/v1/connectors/{w.connector()}",
        None,
    ),
    ("POST", "/v1/connectors/{uid:path}/links"): lambda w: (
        "POST",
        f"/v1/connectors/{w.connector()}/links",
        {"project": "walk", "environments": ["development"]},
    ),
    ("POST", "/v1/connectors/{uid:path}/detach"): lambda w: (
        "POST",
        f"/v1/connectors/{w.connector(attach=True)}/detach",
        {"project": "walk"},
    ),
    ("GET", "/v1/trust-bindings"): lambda w: ("GET", "/v1/trust-bindings", None),
    ("POST", "/v1/projects/{project}/trust-bindings"): lambda w: (
        "POST",
        "/v1/projects/walk/trust-bindings",
        {
            "environment": "production",
            "issuer": f"https://{w.fresh('ci')}.example",
            "audience": "valetkey",
            "claims": {"sub": "walker"},
        },
    ),
    ("DELETE", "/v1/trust-bindings/{binding_id}"): lambda w: (
        "DELETE",
        "/v1/trust-bindings/"
        + w.made(
            "/v1/projects/walk/trust-bindings",
            {
                "environment": "production",
                "issuer": f"https://{w.fresh('ci')}.example",
                "audience": "valetkey",
                "claims": {"sub": "walker"},
            },
        ),
        None,
    ),
    ("GET", "/v1/access-tokens"): lambda w: ("GET", "/v1/access-tokens", None),
    ("POST", "/v1/projects/{project}/access-tokens"): lambda w: (
        "POST",
        "/v1/projects/walk/access-tokens",
        {"environment": "development"},
    ),
    ("DELETE", "/v1/access-tokens/{token_id}"): lambda w: (
        "DELETE",
        "/v1/access-tokens/"
        + w.made("/v1/projects/walk/access-tokens", {"environment": "development"}),
        None,
    ),
    ("GET", "/v1/audit"): lambda w: ("GET", "/v1/audit", None),
    ("GET", "/v1/usage"): lambda w: ("GET", "/v1/usage", None),
    ("GET", "/v1/jobs"): lambda w: ("GET", "/v1/jobs?status=dead", None),
    ("POST", "/v1/jobs/{job_id}/retry"): lambda w: ("POST", f"/v1/jobs/{w.dead_job()}/retry", {}),
    ("DELETE", "/v1/connect/connectors/{uid:path}/tokens"): lambda w: (
        "DELETE",
        "/v1/connect/connectors/api-key%2Fwalk/tokens",
        {"allTokens": True},
    ),
    ("POST", "/v1/connect/token/{uid:path}/import"): lambda w: (
        "POST",
        "/v1/connect/token/oauth%2Fwalk/import",
        {
            "subject": {"type": "user", "id": w.fresh("user")},
            "accessToken": "imported-access-token",
            "project": "walk",
            "environment": "development",
        },
    ),
}


def _snapshot(walk: Walk) -> dict[str, Any]:
    """Team A's state as its owner sees it (last-use times aside: using a credential sets them)."""
    with walk.owner() as c:
        members = [
            {k: v for k, v in m.items() if k != "lastUsedAt"} for m in _ok(c.get("/v1/members"))
        ]
        allowed = _ok(c.get("/v1/audit", params={"decision": "allowed", "limit": 1000}))
        return {
            "members": members,
            "projects": _ok(c.get("/v1/projects")),
            "connectors": _ok(c.get("/v1/connectors")),
            "bindings": _ok(c.get("/v1/trust-bindings")),
            "access_tokens": _ok(c.get("/v1/access-tokens")),
            "allowed": [(e["id"], e["action"]) for e in allowed],
        }


def _a_ids(snapshot: dict[str, Any], team: str) -> set[str]:
    """Team A's opaque ids: none may appear in an answer to another team."""
    ids = {team}
    for kind in ("members", "projects", "connectors", "bindings", "access_tokens"):
        ids |= {row["id"] for row in snapshot[kind]}
    return ids


def _principals(walk: Walk) -> dict[str, str | None]:
    b = walk.broker
    with walk.owner() as c:
        member = _ok(c.post("/v1/members", json={"name": "walk-member", "role": "member"}))
        viewer = _ok(c.post("/v1/members", json={"name": "walk-viewer", "role": "viewer"}))
        revoked = _ok(c.post("/v1/members", json={"name": "walk-revoked", "role": "owner"}))
        expired = _ok(
            c.post(
                "/v1/members",
                json={"name": "walk-expired", "role": "owner", "expiresInSeconds": 60},
            )
        )
        _ok(c.delete(f"/v1/members/{revoked['id']}"))

    async def expire() -> None:
        async with b.broker.db.session.begin() as s:
            await s.execute(
                update(t.MemberCredential)
                .where(t.MemberCredential.member_id == expired["id"])
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )

    b.run(expire())
    other = b.run(b.broker.services.members.create_team("walk-other"))
    return {
        "owner": b.owner_token,
        "member": member["credential"],
        "viewer": viewer["credential"],
        "none": None,
        "revoked": revoked["credential"],
        "expired": expired["credential"],
        "other-team": other.owner_token,
    }


def _setup(walk: Walk) -> None:
    walk.broker.setup_project("walk", {"api-key/walk": {"apiKey": "sk-walk"}})
    with walk.owner() as c:
        _ok(c.post("/v1/connectors", json={"service": "oauth", "name": "walk", "data": OAUTH}))
        _ok(
            c.post(
                "/v1/connectors/oauth/walk/links",
                json={
                    "project": "walk",
                    "environments": ["development"],
                    "subjects": ["app", "user"],
                },
            )
        )


def _expected(principal: str, needed: Role) -> tuple[int, str] | None:
    """(status, code) of the refusal, or None when the call must be allowed."""
    if principal in ("none", "revoked"):
        return 401, "invalid_identity"
    if principal == "expired":
        return 401, "token_expired"
    if principal == "other-team":
        return None  # decided by the object named, below
    return None if Role(principal).at_least(needed) else (403, "forbidden")


def test_every_declared_route_has_a_recipe() -> None:
    """The walk covers the role table exactly: a route added to the table needs a recipe here."""
    assert set(RECIPES) == set(ROUTE_ROLES)


def test_a_route_without_a_declared_role_stops_the_app_build() -> None:
    """check_routes refuses a route in neither table, and a declared route that does not exist."""
    from fastapi import FastAPI

    app = FastAPI(redoc_url=None)  # the broker serves no ReDoc (its assets are CDN-only)

    @app.get("/v1/undeclared")
    async def undeclared() -> None: ...

    with pytest.raises(RuntimeError, match="routes with no declared role: GET /v1/undeclared"):
        check_routes(app.routes)


def test_every_route_allows_exactly_the_roles_its_table_entry_names(broker: RunningBroker) -> None:
    """Each declared route, called by owner, member, viewer, no credential, a revoked one, an expired one and
    another team's owner: allowed exactly when the table says, else the typed refusal and no change;
    another team's owner gets not_found for this team's objects and never sees one of its ids."""
    walk = Walk(broker)
    _setup(walk)
    principals = _principals(walk)
    with walk.owner() as c:
        team = _ok(c.get("/v1/me"))["team"]
    checked = 0
    for (method, template), needed in sorted(ROUTE_ROLES.items(), key=lambda kv: kv[0][1]):
        for principal in PRINCIPALS:
            verb, path, body = RECIPES[(method, template)](walk)
            assert verb == method
            refusal = _expected(principal, needed)
            watched = refusal is not None or principal == "other-team"
            before = _snapshot(walk) if watched else {}
            credential = principals[principal]
            headers = {} if credential is None else {"authorization": f"Bearer {credential}"}
            response = httpx2.request(
                method, broker.url + path, json=body, headers=headers, timeout=30
            )
            label = f"{method} {template} as {principal}"
            if principal == "other-team":
                # A's ids, except the one the caller itself named (echoed in "no such …")
                a_ids = {i for i in _a_ids(before, team) if i not in path}
                assert not any(i in response.text for i in a_ids), (label, response.text)
                if "{" in template:
                    assert response.status_code == 404, (label, response.text)
                    assert response.json()["error"]["code"] == "not_found", label
                else:
                    assert response.status_code < 300, (label, response.text)
                assert _snapshot(walk) == before, label
            elif refusal is None:
                assert response.status_code < 300, (label, response.text)
            else:
                assert response.status_code == refusal[0], (label, response.text)
                assert response.json()["error"]["code"] == refusal[1], (label, response.text)
                assert _snapshot(walk) == before, label
            if template == "/v1/me/credential" and response.status_code < 300:
                principals[principal] = response.json()["credential"]
                if principal == "owner":
                    broker.owner_token = principals["owner"]
            checked += 1
    assert checked == len(ROUTE_ROLES) * len(PRINCIPALS)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/connect/token/api-key%2Fwalk"),
        ("GET", "/v1/connect/connectors/api-key%2Fwalk"),
        ("POST", "/v1/connect/authorize/oauth%2Fwalk"),
    ],
)
def test_workload_routes_do_not_take_a_member_credential(
    sqlite_broker: RunningBroker, method: str, path: str
) -> None:
    """A member credential is not a workload identity: the owner's is refused on the Connect routes
    that declare no role (so it never reads the connector's secret)."""
    assert any(path.startswith(p.split("{")[0]) for _m, p in NO_MEMBER_CREDENTIAL)
    walk = Walk(sqlite_broker)
    _setup(walk)
    response = httpx2.request(
        method,
        sqlite_broker.url + path,
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {sqlite_broker.owner_token}"},
        timeout=30,
    )
    assert response.status_code == 401, response.text
    assert "sk-walk" not in response.text
