"""Trust bindings across teams: the token's (issuer, audience) decides the one team whose bindings
are considered, so no team's binding captures, shadows or blocks another team's workloads.

Two teams on one real broker (each store), an independent OIDC issuer on loopback HTTP
(tests/peers/issuer.py), every binding made through the management API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import insert, text
from tests.peers.issuer import LoopbackIssuer

from valetkey.core.clock import FrozenClock
from valetkey.errors import AudienceTaken
from valetkey.store import tables as t
from valetkey.store.db import MIGRATIONS, Database
from valetkey.testing import RunningBroker

RUNNER = "system:serviceaccount:agents:runner"


@pytest.fixture
def issuer() -> Iterator[LoopbackIssuer]:
    server = LoopbackIssuer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _now() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))


def _sign(issuer: LoopbackIssuer, **claims: Any) -> str:
    """A token of ``issuer`` for the runner in namespace ``agents`` (audience ``valetkey``)."""
    return issuer.sign(_now(), **{"namespace": "agents", **claims})


def _ok(response: httpx2.Response) -> Any:
    assert response.status_code < 400, (response.request.url.path, response.text)
    return response.json()


class Teams:
    """Team A (the broker's default team) and team B, each with a project ``agent`` whose
    connector ``api-key/search`` holds that team's own key, attached for production."""

    def __init__(self, broker: RunningBroker) -> None:
        self.broker = broker
        created = broker.run(broker.broker.services.members.create_team("team-b"))
        self.b_token: str = created.owner_token
        for client, key in ((self.a(), "sk-team-a"), (self.b(), "sk-team-b")):
            with client as c:
                _ok(c.post("/v1/projects", json={"slug": "agent"}))
                _ok(
                    c.post(
                        "/v1/connectors",
                        json={"service": "api-key", "name": "search", "data": {"apiKey": key}},
                    )
                )
                _ok(
                    c.post(
                        "/v1/connectors/api-key/search/links",
                        json={"project": "agent", "environments": ["production", "preview"]},
                    )
                )

    def a(self) -> httpx2.Client:
        return self.broker.admin()

    def b(self) -> httpx2.Client:
        return httpx2.Client(
            base_url=self.broker.url,
            headers={"authorization": f"Bearer {self.b_token}"},
            timeout=30,
        )


def _bind(
    client: httpx2.Client,
    issuer: str,
    claims: dict[str, str],
    *,
    audience: str = "valetkey",
    environment: str = "production",
) -> httpx2.Response:
    with client as c:
        return c.post(
            "/v1/projects/agent/trust-bindings",
            json={
                "environment": environment,
                "issuer": issuer,
                "audience": audience,
                "claims": claims,
                "algorithms": ["ES256"],
            },
        )


def _exchange(broker: RunningBroker, identity: str) -> httpx2.Response:
    return httpx2.post(
        f"{broker.url}/v1/connect/token/api-key%2Fsearch",
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {identity}"},
        timeout=10,
    )


def _exchanges(client: httpx2.Client) -> list[dict[str, Any]]:
    with client as c:
        events: list[dict[str, Any]] = _ok(
            c.get("/v1/audit", params={"action": "token.exchange", "limit": 1000})
        )
    return events


@pytest.fixture
def teams(broker: RunningBroker, issuer: LoopbackIssuer) -> Teams:
    teams = Teams(broker)
    assert _bind(teams.a(), issuer.url, {"sub": RUNNER}).status_code == 201
    return teams


#: Bindings team B tries on team A's (issuer, audience), each of which would have captured
#: (more specific), shadowed (equally specific, same claims) or overlapped (glob) A's token.
CAPTURES = {
    "more specific": {"sub": RUNNER, "namespace": "agents"},
    "equally specific": {"sub": RUNNER},
    "glob": {"sub": "system:serviceaccount:*"},
    "same claims, other environment": {"sub": RUNNER},
    "other claim": {"namespace": "agents"},
}


@pytest.mark.parametrize("attempt", sorted(CAPTURES))
def test_another_team_cannot_bind_a_taken_issuer_and_audience(
    teams: Teams, issuer: LoopbackIssuer, attempt: str
) -> None:
    """B's binding on A's (issuer, audience) is refused with audience_taken, naming no team; A's token
    still resolves to A's project, and B's audit never sees A's identity."""
    environment = "preview" if "environment" in attempt else "production"
    response = _bind(teams.b(), issuer.url, CAPTURES[attempt], environment=environment)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "audience_taken"
    with teams.a() as c:
        me = _ok(c.get("/v1/me"))
    assert me["team"] not in response.text
    assert "default" not in response.text
    with teams.b() as c:
        assert _ok(c.get("/v1/trust-bindings")) == []

    served = _exchange(teams.broker, _sign(issuer))
    assert served.status_code == 200, served.text
    assert served.json()["token"] == "sk-team-a"
    assert [e["environment"] for e in _exchanges(teams.a())] == ["production"]
    assert _exchanges(teams.b()) == []


def test_a_token_matching_no_binding_of_its_team_is_refused_not_served_elsewhere(
    teams: Teams, issuer: LoopbackIssuer
) -> None:
    """A token for A's audience that matches none of A's bindings gets A's own refusal, even when
    B holds a binding for those claims under another audience."""
    other = "system:serviceaccount:other:runner"
    assert (
        _bind(teams.b(), issuer.url, {"sub": other}, audience="valetkey:team-b").status_code == 201
    )
    response = _exchange(teams.broker, _sign(issuer, sub=other))
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "no_matching_binding"
    assert _exchanges(teams.b()) == []


def test_other_audience_or_other_issuer_is_each_teams_own(
    teams: Teams, issuer: LoopbackIssuer
) -> None:
    """B binds the same issuer under its own audience, and another issuer under A's audience
    string: each token resolves to the team its (iss, aud) names, and each audit shows only its own."""
    stranger = LoopbackIssuer()
    stranger.start()
    try:
        assert (
            _bind(teams.b(), issuer.url, {"sub": RUNNER}, audience="valetkey:team-b").status_code
            == 201
        )
        assert _bind(teams.b(), stranger.url, {"sub": RUNNER}).status_code == 201
        cases = [
            (_sign(issuer), "sk-team-a"),
            (_sign(issuer, aud="valetkey:team-b"), "sk-team-b"),
            (_sign(stranger), "sk-team-b"),
        ]
        for token, key in cases:
            response = _exchange(teams.broker, token)
            assert response.status_code == 200, response.text
            assert response.json()["token"] == key
    finally:
        stranger.stop()
    assert len(_exchanges(teams.a())) == 1
    assert len(_exchanges(teams.b())) == 2
    with teams.a() as c:
        a_bindings = _ok(c.get("/v1/trust-bindings"))
    assert [(b["issuer"], b["audience"], b["active"]) for b in a_bindings] == [
        (issuer.url, "valetkey", True)
    ]


@pytest.mark.parametrize(
    "audience", ["valetkey:default", "valetkey:default:ci", "valetkey:", "valetkey:team-bx"]
)
def test_reserved_audiences_name_their_team(
    teams: Teams, issuer: LoopbackIssuer, audience: str
) -> None:
    """valetkey:<slug> audiences belong to the team with that slug: B cannot claim A's ahead of it."""
    response = _bind(teams.b(), issuer.url, {"sub": RUNNER}, audience=audience)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "audience"
    own = _bind(teams.b(), issuer.url, {"sub": RUNNER}, audience="valetkey:team-b:ci")
    assert own.status_code == 201, own.text


def test_deleting_the_last_binding_releases_the_pair(teams: Teams, issuer: LoopbackIssuer) -> None:
    """The pair stays A's while any A binding uses it, and is free for any team once the last goes."""
    second = _ok(_bind(teams.a(), issuer.url, {"sub": RUNNER}, environment="preview"))
    with teams.a() as c:
        first = next(b for b in _ok(c.get("/v1/trust-bindings")) if b["id"] != second["id"])
        _ok(c.delete(f"/v1/trust-bindings/{first['id']}"))
    assert _bind(teams.b(), issuer.url, {"sub": RUNNER}).status_code == 409
    with teams.a() as c:
        _ok(c.delete(f"/v1/trust-bindings/{second['id']}"))
    assert _bind(teams.b(), issuer.url, {"sub": RUNNER}).status_code == 201
    response = _exchange(teams.broker, _sign(issuer))
    assert response.json()["token"] == "sk-team-b"
    assert _bind(teams.a(), issuer.url, {"sub": RUNNER}).status_code == 409


def test_concurrent_claims_of_one_pair_have_one_winner(broker: RunningBroker) -> None:
    """Two teams creating a binding on the same new (issuer, audience) at the same moment: exactly
    one team wins (all its creates succeed) and every create of the other gets audience_taken."""
    teams = Teams(broker)
    trust = broker.broker.services.trust
    members = broker.broker.services.members

    async def create(member: Any, issuer: str) -> tuple[str, bool]:
        try:
            await trust.create_binding(
                member,
                "agent",
                environment="production",
                issuer=issuer,
                audience="valetkey",
                claims={"sub": RUNNER},
            )
        except AudienceTaken:
            return member.team_id, False
        return member.team_id, True

    async def race(rounds: int) -> tuple[list[list[tuple[str, bool]]], list[tuple[str, str]]]:
        # At least ``rounds`` rounds, and on until each team has won one (at most 5 x ``rounds``):
        # which connection reaches the store first is the scheduler's choice, not the order given.
        a = await members.authenticate(broker.owner_token)
        b = await members.authenticate(teams.b_token)
        outcomes: list[list[tuple[str, bool]]] = []
        winners: set[str] = set()
        for n in range(5 * rounds):
            if n >= rounds and len(winners) == 2:
                break
            first, second = (a, b) if n % 2 else (b, a)
            issuer = f"https://ci-{n}.example"
            outcomes.append(
                list(
                    await asyncio.gather(
                        create(first, issuer), create(second, issuer), create(first, issuer)
                    )
                )
            )
            winners |= {team for team, won in outcomes[-1] if won}
        async with broker.broker.db.session() as s:
            rows = await s.execute(text("SELECT issuer, team_id FROM trust_audiences"))
            held = [(r[0], r[1]) for r in rows.all()]
        return outcomes, held

    outcomes, held = broker.run(race(8))
    owner_of = dict(held)
    assert len(held) == len(owner_of) == len(outcomes) >= 8
    for n, results in enumerate(outcomes):
        winners = {team for team, won in results if won}
        assert winners == {owner_of[f"https://ci-{n}.example"]}, results
        assert all(won == (team in winners) for team, won in results), results
    assert len(set(owner_of.values())) == 2  # each team won some: both orders were raced


def test_bindings_that_overlapped_before_owners_are_listed_inactive_and_never_selected(
    teams: Teams, issuer: LoopbackIssuer
) -> None:
    """A binding of B left on A's pair (as the migration leaves old overlaps) is never selected,
    is listed as inactive to B, and is counted for the start-up warning."""

    async def overlap() -> None:
        async with teams.broker.broker.db.session.begin() as s:
            b_project = await s.scalar(
                text(
                    "SELECT p.id FROM projects p JOIN teams t ON t.id = p.team_id "
                    "WHERE t.slug = 'team-b'"
                )
            )
            s.add(
                t.TrustBinding(
                    id="tb_overlap",
                    team_id=(await s.scalar(text("SELECT id FROM teams WHERE slug = 'team-b'"))),
                    project_id=b_project,
                    environment="production",
                    issuer=issuer.url,
                    audience="valetkey",
                    conditions={"sub": RUNNER, "namespace": "agents"},
                    algorithms=["ES256"],
                    created_at=datetime.now(UTC),
                )
            )

    teams.broker.run(overlap())
    assert teams.broker.run(teams.broker.broker.repo.shadowed_bindings()) == 1
    with teams.b() as c:
        (listed,) = _ok(c.get("/v1/trust-bindings"))
    assert (listed["id"], listed["active"]) == ("tb_overlap", False)
    response = _exchange(teams.broker, _sign(issuer))
    assert response.json()["token"] == "sk-team-a"
    assert _exchanges(teams.b()) == []


def _upgrade(connection: Any, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def test_migration_gives_each_pair_to_its_earliest_binding(database_url: str) -> None:
    """Upgrading a store whose teams already shared an (issuer, audience) gives the pair to the team
    of the earliest binding; the later team's binding stays, unowned (never selected)."""

    async def go() -> list[tuple[str, str, str]]:
        db = Database(database_url)
        try:
            async with db.engine.begin() as conn:
                await conn.run_sync(_upgrade, "0002")
            async with db.engine.begin() as conn:
                for team, month in (("team_late", 2), ("team_early", 1), ("team_other", 3)):
                    at = datetime(2026, month, 1, tzinfo=UTC)
                    await conn.execute(
                        insert(t.Team.__table__).values(
                            id=team, slug=team, name=team, created_at=at
                        )
                    )
                    await conn.execute(
                        insert(t.Project.__table__).values(
                            id=f"prj_{team}",
                            team_id=team,
                            slug="agent",
                            name="agent",
                            created_at=at,
                        )
                    )
                    await conn.execute(
                        insert(t.TrustBinding.__table__).values(
                            id=f"tb_{team}",
                            team_id=team,
                            project_id=f"prj_{team}",
                            environment="production",
                            issuer="https://ci.example",
                            audience="valetkey:x" if team == "team_other" else "valetkey",
                            conditions={"sub": "x"},
                            algorithms=["ES256"],
                            created_at=at,
                        )
                    )
            async with db.engine.begin() as conn:
                await conn.run_sync(_upgrade, "head")
            async with db.engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT issuer, audience, team_id FROM trust_audiences ORDER BY audience")
                )
                return [(r[0], r[1], r[2]) for r in rows.all()]
        finally:
            await db.close()

    assert asyncio.run(go()) == [
        ("https://ci.example", "valetkey", "team_early"),
        ("https://ci.example", "valetkey:x", "team_other"),
    ]
