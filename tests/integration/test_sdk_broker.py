"""The SDK against the real broker over a socket: identity from the .env, single flight, eviction on revoke."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import valetkey
from valetkey.testing import RunningBroker


def _requests_counted(broker: RunningBroker) -> int:
    with broker.admin() as c:
        return int(c.get("/v1/usage").json()["counters"].get("tokenRequests", 0))


async def test_concurrent_identical_calls_make_one_broker_request(
    sqlite_broker: RunningBroker,
) -> None:
    """Fifty concurrent identical get_token calls reach the broker once; the broker counts one request."""
    identity = sqlite_broker.setup_project("agent", {"api-key/search": {"apiKey": "sk-sf"}})
    async with valetkey.AsyncClient(base_url=sqlite_broker.url, identity=identity) as client:
        tokens = await asyncio.gather(*(client.get_token("api-key/search") for _ in range(50)))
    assert set(tokens) == {"sk-sf"}
    assert _requests_counted(sqlite_broker) == 1


def test_sync_client_caches_and_revoke_evicts_exactly_the_revoked_entries(
    sqlite_broker: RunningBroker,
) -> None:
    """A cached token is served without a broker call; revoking one connector's tokens evicts only its entries."""
    identity = sqlite_broker.setup_project(
        "agent", {"api-key/a": {"apiKey": "sk-a"}, "api-key/b": {"apiKey": "sk-b"}}
    )
    with valetkey.Client(base_url=sqlite_broker.url, identity=identity) as client:
        assert client.get_token("api-key/a") == "sk-a"
        assert client.get_token("api-key/b") == "sk-b"
        assert client.get_token("api-key/a") == "sk-a"
        assert _requests_counted(sqlite_broker) == 2
        result = client.revoke_tokens("api-key/a", subject="app")
        assert result.tokens_found == 1
        assert result.deleted == 1
        client.get_token("api-key/b")  # still cached
        assert _requests_counted(sqlite_broker) == 2
        client.get_token("api-key/a")  # evicted: asks the broker again
        assert _requests_counted(sqlite_broker) == 3


def test_typed_errors_from_the_broker(sqlite_broker: RunningBroker) -> None:
    """The broker's refusals surface as the SDK's typed errors with the broker's details."""
    identity = sqlite_broker.setup_project("agent", {"api-key/a": {"apiKey": "sk-a"}})
    with valetkey.Client(base_url=sqlite_broker.url, identity=identity) as client:
        with pytest.raises(valetkey.NotFound):
            client.get_token("api-key/nope")
        with pytest.raises(valetkey.SubjectNotAllowed) as info:
            client.get_token("api-key/a", user="alice")
        assert info.value.details["allowedSubjects"] == ["app"]
    with (
        valetkey.Client(base_url=sqlite_broker.url, identity="garbage") as client,
        pytest.raises(valetkey.IdentityError),
    ):
        client.get_token("api-key/a")


def test_quick_start_snippet_runs_from_an_env_pulled_directory(
    sqlite_broker: RunningBroker, tmp_path: Path
) -> None:
    """The README's snippet works in a directory holding the .env that `valetkey env pull` writes."""
    identity = sqlite_broker.setup_project("agent", {"api-key/search": {"apiKey": "sk-demo-123"}})
    work = tmp_path / "app"
    work.mkdir()
    (work / ".env").write_text(f"VALETKEY_URL={sqlite_broker.url}\nVALETKEY_TOKEN={identity}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VALETKEY_")}
    snippet = 'import valetkey.sync as valetkey\nprint(valetkey.get_token("api-key/search"))\n'
    out = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sk-demo-123"
