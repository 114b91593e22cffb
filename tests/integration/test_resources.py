"""Resource exhaustion, with slow stand-in providers (real sockets that sleep) and real brokers.

A hung provider must not starve other connectors (per-connector slots, a bounded wait, a
deadline); a slow refresh must not hold a database lock (SQLite: its write lock) while the
provider answers, and a replica that dies holding a refresh claim must not block the grant
for good; unknown connector uids must not grow the broker's memory.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.peers.scripted import Recorded, Reply, ScriptedServer

from valetkey.core.exchange_cache import MAX_UNKNOWN_VIEWS
from valetkey.core.models import Identity, Subject, TokenRequest
from valetkey.errors import NotFound
from valetkey.testing import RunningBroker, running_broker, spawn_broker

SECRET = "stand-in-secret-value"
SCOPES = [f"s{i}" for i in range(1, 7)]


@pytest.fixture
def provider() -> Iterator[ScriptedServer]:
    """A scripted token endpoint on a loopback socket (one thread per request)."""
    server = ScriptedServer()
    try:
        yield server
    finally:
        server.close()


def _token_reply(
    access: str, *, delay: float = 0.0, refresh: str | None = None
) -> Callable[[Recorded], Reply]:
    """A token answer that grants exactly the scope asked (as a strict provider states it)."""

    def answer(request: Recorded) -> Reply:
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": 600}
        if refresh is not None:
            body["refresh_token"] = refresh
        asked = request.form.get("scope")
        if asked:
            body["scope"] = asked[0]
        return Reply(json_body=body, delay=delay)

    return answer


def _calls(server: ScriptedServer, path: str) -> int:
    return sum(1 for r in list(server.requests) if r.path == path)


def _wait_for_call(server: ScriptedServer, path: str, count: int = 1, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while _calls(server, path) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the provider never received {path}")
        time.sleep(0.01)


def _ok(answer: httpx2.Response) -> Any:
    assert answer.status_code < 300, f"{answer.request.url.path}: {answer.text}"
    return answer.json()


def _connector(
    c: httpx2.Client, name: str, data: dict[str, Any], project: str, **link: Any
) -> None:
    _ok(c.post("/v1/connectors", json={"service": "oauth", "name": name, "data": data}))
    _ok(
        c.post(
            f"/v1/connectors/oauth/{name}/links",
            json={"project": project, "environments": ["development"], **link},
        )
    )


def _app_connector(server: ScriptedServer, path: str) -> dict[str, Any]:
    return {
        "tokenUrl": server.url + path,
        "clientId": "stand-in",
        "clientSecret": SECRET,
        "scopes": SCOPES,
    }


def _user_connector(server: ScriptedServer, path: str) -> dict[str, Any]:
    return {
        "tokenUrl": server.url + path,
        "authorizationUrl": server.url + "/authorize",
        "clientId": "stand-in",
        "clientSecret": SECRET,
        "grants": ["authorization_code"],
    }


def _token(
    url: str,
    identity: str,
    name: str,
    body: dict[str, Any],
    timeout: float = 30,
    http: httpx2.Client | None = None,
) -> httpx2.Response:
    return (http or httpx2).post(
        f"{url}/v1/connect/token/oauth%2F{name}",
        json=body,
        headers={"authorization": f"Bearer {identity}"},
        timeout=timeout,
    )


def _import(url: str, identity: str, name: str, user: str, access: str) -> None:
    """Give ``user`` a grant on ``oauth/name`` whose access token expires in 1 s."""
    _ok(
        httpx2.post(
            f"{url}/v1/connect/token/oauth%2F{name}/import",
            json={
                "subject": {"type": "user", "id": user},
                "accessToken": access,
                "refreshToken": f"rt-{user}-0",
                "expiresIn": 1,
            },
            headers={"authorization": f"Bearer {identity}"},
            timeout=10,
        )
    )


def _user(user: str) -> dict[str, Any]:
    return {"subject": {"type": "user", "id": user}}


# -- per-connector concurrency and deadlines ---------------------------------------------------


def test_a_hung_provider_does_not_starve_other_connectors(
    tmp_path: Path, provider: ScriptedServer
) -> None:
    """While A's provider hangs 30 s under 16 distinct requests, B mints and hits its cache at once;
    A's requests are refused fast (provider_busy) or cut at the deadline (provider_timeout)."""
    provider.reply("/a/token", _token_reply("tok-a", delay=30))
    provider.reply("/b/token", _token_reply("tok-b"))
    limits = {
        "provider_concurrency": 2,
        "provider_wait_seconds": 0.3,
        "provider_timeout_seconds": 1.5,
        "outbound_connections": 4,
    }
    with running_broker(tmp_path / "data", **limits) as broker:
        with broker.admin() as c:
            _ok(c.post("/v1/projects", json={"slug": "agent"}))
            _connector(c, "slow", _app_connector(provider, "/a/token"), "agent", scopes=SCOPES)
            _connector(c, "fast", _app_connector(provider, "/b/token"), "agent", scopes=SCOPES)
            identity = _ok(c.post("/v1/projects/agent/development-identity", json={}))["token"]
        # 16 different scope sets: 16 single-flight keys a caller chose.
        combos = [list(s) for n in (1, 2, 3) for s in itertools.combinations(SCOPES, n)][:16]
        http = httpx2.Client(timeout=30, limits=httpx2.Limits(max_connections=32))

        def slow(scopes: list[str]) -> tuple[httpx2.Response, float]:
            started = time.monotonic()
            body = {"subject": {"type": "app"}, "scopes": scopes}
            answer = _token(broker.url, identity, "slow", body, http=http)
            return answer, time.monotonic() - started

        with http, ThreadPoolExecutor(len(combos)) as pool:
            for name in ("slow", "fast"):  # load both views: what follows measures provider calls
                body = {"subject": {"type": "app"}, "scopes": ["not-allowed"]}
                assert _token(broker.url, identity, name, body, http=http).status_code == 403
            storm = [pool.submit(slow, scopes) for scopes in combos]
            _wait_for_call(provider, "/a/token", 2)
            timings = []
            for _ in range(2):  # a mint at B's provider, then a cache hit
                started = time.monotonic()
                answer = _token(broker.url, identity, "fast", {"subject": {"type": "app"}}, http=http)
                timings.append(time.monotonic() - started)
                assert answer.status_code == 200, answer.text
                assert answer.json()["token"] == "tok-b"
            results = [f.result() for f in storm]
        assert max(timings) < 1.0, timings
        assert _calls(provider, "/a/token") == 2  # the connector's cap, whatever the keys
        codes = [r.json()["error"]["code"] for r, _ in results]
        assert sorted(set(codes)) == ["provider_busy", "provider_timeout"], codes
        for answer, took in results:
            if answer.status_code == 503:
                assert answer.json()["error"]["code"] == "provider_busy"
                assert answer.headers["retry-after"] == "1"
                assert took < 1.4, took  # before the hung calls' deadline
            else:
                assert answer.status_code == 504, answer.text
                assert 1.3 < took < 4, took
        assert codes.count("provider_timeout") == 2


# -- refresh without a transaction across the provider call -----------------------------------


def test_sqlite_writes_go_on_while_a_refresh_waits_for_its_provider(
    tmp_path: Path, provider: ScriptedServer
) -> None:
    """On SQLite, while one grant's refresh waits 5 s for its provider, a new project, the audit
    flush and another grant's refresh are written at once."""
    provider.reply("/slow/token", _token_reply("at-alice-1", delay=5, refresh="rt-alice-1"))
    provider.reply("/fast/token", _token_reply("at-bob-1", refresh="rt-bob-1"))
    with running_broker(tmp_path / "data", provider_timeout_seconds=10) as broker:
        with broker.admin() as c:
            _ok(c.post("/v1/projects", json={"slug": "agent"}))
            _connector(c, "slow", _user_connector(provider, "/slow/token"), "agent", subjects=["user"])
            _connector(c, "fast", _user_connector(provider, "/fast/token"), "agent", subjects=["user"])
            identity = _ok(c.post("/v1/projects/agent/development-identity", json={}))["token"]
        _import(broker.url, identity, "slow", "alice", "at-alice-0")
        _import(broker.url, identity, "fast", "bob", "at-bob-0")
        time.sleep(1.2)
        result: dict[str, httpx2.Response] = {}
        waiting = threading.Thread(
            target=lambda: result.setdefault("alice", _token(broker.url, identity, "slow", _user("alice")))
        )
        waiting.start()
        try:
            _wait_for_call(provider, "/slow/token")
            took: dict[str, float] = {}
            with broker.admin() as c:
                for i in range(3):
                    started = time.monotonic()
                    created = c.post("/v1/projects", json={"slug": f"other-{i}"})
                    took[f"project {i}"] = time.monotonic() - started
                    assert created.status_code == 201, created.text
            started = time.monotonic()
            broker.run(broker.broker.audit.flush(), timeout=10)
            took["audit flush"] = time.monotonic() - started
            started = time.monotonic()
            bob = _token(broker.url, identity, "fast", _user("bob"))
            took["bob's refresh"] = time.monotonic() - started
            assert bob.status_code == 200, bob.text
            assert bob.json()["token"] == "at-bob-1"
            assert max(took.values()) < 1.0, took
            assert waiting.is_alive()  # alice's refresh was still waiting for its provider
        finally:
            waiting.join(15)
        assert result["alice"].status_code == 200, result["alice"].text
        assert result["alice"].json()["token"] == "at-alice-1"
        assert _calls(provider, "/slow/token") == 1


def test_a_claim_whose_holder_died_is_taken_over_once_it_expires(
    database_url: str, tmp_path: Path, provider: ScriptedServer
) -> None:
    """A replica killed mid-refresh leaves a claim that holds until it expires; then another
    replica refreshes, once."""
    provider.reply("/token", _token_reply("at-1", delay=30, refresh="rt-1"))
    data, public = tmp_path / "data", "http://valetkey.test"
    # A claim lasts the gate's wait + deadline + 3 s margin: 0.2 + 1 + 3 = 4.2 s here.
    env = {"VALETKEY_PROVIDER_TIMEOUT": "1", "VALETKEY_PROVIDER_WAIT": "0.2",
           "VALETKEY_SHARED_DATA_DIR": "1"}  # two replicas on one SQLite file, on purpose
    first = spawn_broker(data, database_url=database_url, public_url=public, env=env)
    second = None
    try:
        a = first.handle
        with a.admin() as c:
            _ok(c.post("/v1/projects", json={"slug": "agent"}))
            _connector(c, "acme", _user_connector(provider, "/token"), "agent", subjects=["user"])
            identity = _ok(c.post("/v1/projects/agent/development-identity", json={}))["token"]
        _import(a.url, identity, "acme", "alice", "at-0")
        imported = time.monotonic()

        def doomed() -> None:
            with contextlib.suppress(httpx2.HTTPError):  # its broker is killed under it
                _token(a.url, identity, "acme", _user("alice"))

        dying = threading.Thread(target=doomed)
        second = spawn_broker(
            data, database_url=database_url, owner_token=a.owner_token, public_url=public, env=env
        )
        b = second.handle
        time.sleep(max(0.0, 1.2 - (time.monotonic() - imported)))  # the access token expired
        dying.start()
        _wait_for_call(provider, "/token")
        claimed_at = time.monotonic()
        first.proc.kill()  # SIGKILL, in the middle of the provider call: no cleanup runs
        first.proc.wait(5)
        dying.join(10)
        provider.reply("/token", _token_reply("at-2", refresh="rt-2"))
        answer = _token(b.url, identity, "acme", _user("alice"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["token"] == "at-2"
        # The other replica waited for the dead holder's claim to expire before refreshing.
        assert time.monotonic() - claimed_at > 4.0
        again = _token(b.url, identity, "acme", _user("alice"))
        assert again.json()["token"] == "at-2"
        assert _calls(provider, "/token") == 2  # one refresh per claim
        form = [r.form for r in provider.requests if r.path == "/token"]
        assert [f["refresh_token"] for f in form] == [["rt-alice-0"], ["rt-alice-0"]]
    finally:
        first.stop()
        if second is not None:
            second.stop()


# -- bounded caches ----------------------------------------------------------------------------


def _identity(broker: RunningBroker, token: str) -> Identity:
    identity: Identity = broker.run(broker.broker.verifier.verify(token))
    return identity


def test_unknown_uids_do_not_grow_the_view_cache(tmp_path: Path) -> None:
    """3,000 distinct 4 KB unknown uids leave the negative cache at its cap and no memory held;
    a known connector still hits its cache; a connector created afterwards is served."""
    with running_broker(tmp_path / "data") as broker:
        token = broker.setup_project("agent", {"api-key/known": {"apiKey": "sk-known"}})
        identity = _identity(broker, token)
        exchange = broker.broker.exchange
        app = TokenRequest(Subject("app"))

        async def probe(uids: list[str]) -> int:
            refused = 0
            for uid in uids:
                try:
                    await exchange.exchange(identity, uid, app)
                except NotFound:
                    refused += 1
            return refused

        assert broker.run(exchange.exchange(identity, "api-key/known", app)).token == "sk-known"
        broker.run(broker.broker.audit.flush())
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            uids = [f"api-key/{i:05d}" + "x" * 4096 for i in range(3000)]
            assert broker.run(probe(uids), timeout=120) == 3000
            del uids
            broker.run(broker.broker.audit.flush())
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        assert grown < 3 * 1024 * 1024, f"{grown} bytes retained"  # the uids alone are 12 MB
        views, unknown = exchange.cached_views
        assert unknown == MAX_UNKNOWN_VIEWS
        assert views >= 1
        hit = broker.run(exchange.exchange(identity, "api-key/known", app))
        assert hit.cached is True
        assert hit.token == "sk-known"
        # A uid answered "unknown" is served as soon as the connector is created.
        assert _exchange_status(broker, token, "api-key/later") == 404
        with broker.admin() as c:
            _ok(
                c.post(
                    "/v1/connectors",
                    json={"service": "api-key", "name": "later", "data": {"apiKey": "sk-later"}},
                )
            )
            _ok(
                c.post(
                    "/v1/connectors/api-key/later/links",
                    json={"project": "agent", "environments": ["development"]},
                )
            )
        assert _exchange_status(broker, token, "api-key/later") == 200


def _exchange_status(broker: RunningBroker, identity: str, uid: str) -> int:
    return httpx2.post(
        f"{broker.url}/v1/connect/token/{uid.replace('/', '%2F')}",
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {identity}"},
        timeout=10,
    ).status_code
