"""Revoke-all over a large ledger on both stores, and provider revocation against an RFC 7009 stand-in.

The ledger is filled straight through the store (bulk insert, as ``bench/bench_revoke.py``
does); revocation goes through the real broker's HTTP API. No timing is asserted here: the
benchmark measures it.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx2
import pytest
from sqlalchemy import func, select

from valetkey.store import tables as t
from valetkey.testing import RunningBroker, fill_ledger

MANY = 5_000


async def _ledger(broker: Any, connector_id: str) -> dict[str | None, int]:
    """The connector's ledger rows counted by outcome (None: still active)."""
    async with broker.db.session() as s:
        rows = await s.execute(
            select(t.IssuedToken.revocation, func.count())
            .where(t.IssuedToken.connector_id == connector_id)
            .group_by(t.IssuedToken.revocation)
        )
        return {outcome: int(n) for outcome, n in rows.all()}


async def _cache_rows(broker: Any, connector_id: str) -> int:
    async with broker.db.session() as s:
        return int(
            await s.scalar(
                select(func.count())
                .select_from(t.CachedToken)
                .where(t.CachedToken.connector_id == connector_id)
            )
            or 0
        )


async def _new_team(broker: Any) -> str:
    team_id = f"team_{secrets.token_hex(6)}"
    async with broker.db.session.begin() as s:
        s.add(t.Team(id=team_id, slug=team_id, name=team_id, created_at=broker.clock.now()))
    return team_id


def _ids(broker: RunningBroker, uid: str) -> tuple[str, str, str]:
    """(team id, connector id, project id) of an attached connector."""
    with broker.admin() as c:
        team = c.get("/v1/me").json()["team"]
    view = broker.run(broker.broker.repo.connector_view(team, uid))
    return team, view.connector.id, next(iter(view.links))


def _exchange(broker: RunningBroker, identity: str, uid: str) -> dict[str, Any]:
    answer = httpx2.post(
        f"{broker.url}/v1/connect/token/{uid.replace('/', '%2F')}",
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {identity}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_revoke_all_over_many_tokens_revokes_exactly_them(broker: RunningBroker) -> None:
    """5,000 bulk-filled tokens and one minted: all revoked, every cache entry refused afterwards
    (the store's and the in-memory one), truthful counts, one audit event; another connector's
    tokens and another team's tokens on the same connector untouched."""
    identity = broker.setup_project(
        "many", {"api-key/many": {"apiKey": "sk-many"}, "api-key/other": {"apiKey": "sk-other"}}
    )
    team, connector_id, project_id = _ids(broker, "api-key/many")
    _, other_id, _ = _ids(broker, "api-key/other")
    inner = broker.broker
    keys = broker.run(fill_ledger(inner, team, connector_id, project_id, MANY), timeout=120)
    broker.run(fill_ledger(inner, team, other_id, project_id, 50))
    # Another team's rows on this connector's id (only possible by hand): never matched.
    stranger = broker.run(_new_team(inner))
    broker.run(fill_ledger(inner, stranger, connector_id, project_id, 20))
    minted = _exchange(broker, identity, "api-key/many")
    assert _exchange(broker, identity, "api-key/many")["tokenId"] == minted["tokenId"]  # cached

    with broker.admin() as c:
        counts = c.request(
            "DELETE", "/v1/connect/connectors/api-key%2Fmany/tokens", json={"allTokens": True}
        ).json()
        events = c.get("/v1/audit", params={"action": "token.revoke"}).json()
    assert counts == {
        "tokensFound": MANY + 1,
        "deleted": MANY + 1,
        "providerRevoked": 0,
        "providerSkipped": MANY + 1,
        "providerFailed": 0,
    }
    ledger = broker.run(_ledger(inner, connector_id))
    assert ledger == {"skipped: the provider cannot revoke this credential": MANY + 1, None: 20}
    assert broker.run(_cache_rows(inner, connector_id)) == 20  # the stranger's rows only
    for key in keys[:: MANY // 50]:
        assert broker.run(inner.repo.load_cached(key)) is None
    assert broker.run(_ledger(inner, other_id)) == {None: 50}
    assert broker.run(_cache_rows(inner, other_id)) == 50
    assert _exchange(broker, identity, "api-key/many")["tokenId"] != minted["tokenId"]
    items = events.get("items", events) if isinstance(events, dict) else events
    ours = [e for e in items if e.get("decision") == "allowed"]
    assert len(ours) == 1
    assert ours[0]["details"]["tokensFound"] == MANY + 1


# -- provider revocation against an RFC 7009 stand-in -------------------------------------------


class Rfc7009StandIn:
    """An RFC 7009 §2.1 endpoint: client authentication in the form, ``token`` required; answers
    503 for the tokens in ``fail``, 200 otherwise (§2.2), and records every token it was sent."""

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.seen: list[str] = []
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                token = form.get("token", [""])[0]
                ok_client = form.get("client_id") == ["agent-app"] or "authorization" in {
                    k.lower() for k in self.headers
                }
                with stand_in.lock:
                    stand_in.seen.append(token)
                if not token or not ok_client:
                    status, body = 400, {"error": "invalid_request"}
                elif token in stand_in.fail:
                    status, body = 503, {"error": "temporarily_unavailable"}
                else:
                    status, body = 200, {}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in() -> Iterator[Rfc7009StandIn]:
    server = Rfc7009StandIn(fail={f"at_{i}" for i in range(0, 200, 7)})
    try:
        yield server
    finally:
        server.close()


def _oauth(broker: RunningBroker, stand_in: Rfc7009StandIn) -> tuple[str, str, str]:
    broker.setup_project(
        "prov",
        {
            "oauth/revoking": {
                "tokenUrl": f"{stand_in.url}/token",
                "clientId": "agent-app",
                "clientSecret": "s3cret-s3cret",
                "revocationUrl": f"{stand_in.url}/revoke",
            }
        },
    )
    return _ids(broker, "oauth/revoking")


def test_provider_failures_are_counted_and_the_rest_revoked(
    broker: RunningBroker, stand_in: Rfc7009StandIn
) -> None:
    """Each token is sent to the RFC 7009 endpoint once; the ones it refuses are counted failed
    and recorded so in the ledger, every other one revoked; no cache row is left."""
    team, connector_id, project_id = _oauth(broker, stand_in)
    broker.run(fill_ledger(broker.broker, team, connector_id, project_id, 200))
    with broker.admin(timeout=120) as c:
        counts = c.request(
            "DELETE", "/v1/connect/connectors/oauth%2Frevoking/tokens", json={"allTokens": True}
        ).json()
    failing = len(stand_in.fail)
    assert counts == {
        "tokensFound": 200,
        "deleted": 200,
        "providerRevoked": 200 - failing,
        "providerSkipped": 0,
        "providerFailed": failing,
    }
    assert sorted(stand_in.seen) == sorted(f"at_{i}" for i in range(200))
    ledger = broker.run(_ledger(broker.broker, connector_id))
    assert ledger.pop("revoked") == 200 - failing
    assert sum(ledger.values()) == failing
    assert all(outcome is not None and outcome.startswith("failed: ") for outcome in ledger)
    assert broker.run(_cache_rows(broker.broker, connector_id)) == 0


def test_revoke_all_streams_progress_as_json_lines(
    broker: RunningBroker, stand_in: Rfc7009StandIn
) -> None:
    """With Accept: application/x-ndjson the answer is lines of counts, the last one final
    (``done``) with the Connect wire's five counts; the plain answer is unchanged."""
    team, connector_id, project_id = _oauth(broker, stand_in)
    broker.run(fill_ledger(broker.broker, team, connector_id, project_id, 120))
    lines = []
    with (
        broker.admin(timeout=120) as c,
        c.stream(
            "DELETE",
            "/v1/connect/connectors/oauth%2Frevoking/tokens",
            json={"allTokens": True},
            headers={"accept": "application/x-ndjson"},
        ) as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in answer.iter_lines() if line.strip()]
    assert lines[0]["providerTotal"] == 120
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    last = lines[-1]
    assert last["providerPending"] == 0
    assert last["tokensFound"] == 120
    assert last["providerRevoked"] + last["providerFailed"] == 120
    assert last["providerFailed"] == len({f"at_{i}" for i in range(120)} & stand_in.fail)
    done = [line["providerTotal"] - line["providerPending"] for line in lines]
    assert done == sorted(done)
