"""Secrets at rest: a planted secret appears in neither the SQLite file nor a PostgreSQL dump."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import httpx2
import pytest

from valetkey.testing import running_broker


def _plant(url: str, owner: str, secret: str, identity_holder: list[str]) -> None:
    headers = {"authorization": f"Bearer {owner}"}
    with httpx2.Client(base_url=url, headers=headers) as c:
        c.post("/v1/projects", json={"slug": "agent"}).raise_for_status()
        c.post(
            "/v1/connectors",
            json={"service": "api-key", "name": "planted", "data": {"apiKey": secret}},
        ).raise_for_status()
        c.post(
            "/v1/connectors/api-key/planted/links",
            json={"project": "agent", "environments": ["development"]},
        ).raise_for_status()
        identity = c.post("/v1/projects/agent/development-identity", json={}).json()["token"]
        created = c.post(
            "/v1/projects/agent/access-tokens", json={"environment": "development"}
        ).json()
    identity_holder.extend([identity, created["token"]])
    # An exchange puts the secret into the (encrypted) token cache and the ledger (as a hash).
    response = httpx2.post(
        f"{url}/v1/connect/token/api-key%2Fplanted",
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {identity}"},
    )
    assert response.json()["token"] == secret


def _needles(secret: str, tokens: list[str]) -> list[bytes]:
    return [
        secret.encode(),
        *(t.encode() for t in tokens[1:]),
    ]  # the access token is shown once, stored hashed


def test_sqlite_file_holds_no_plaintext_secret(tmp_path: Path) -> None:
    """Neither the database file nor its WAL contains the connector secret or the access token."""
    secret = "sk-planted-" + secrets.token_hex(16)
    held: list[str] = []
    data = tmp_path / "data"
    with running_broker(data) as broker:
        _plant(broker.url, broker.owner_token, secret, held)
        with broker.admin() as c:
            c.get("/v1/audit")  # flushes the audit log into the file
        raw = b"".join(p.read_bytes() for p in data.glob("valetkey.db*"))
    assert raw, "no database file found"
    for needle in _needles(secret, held):
        assert needle not in raw


def test_postgres_dump_holds_no_plaintext_secret(postgres_url: str, tmp_path: Path) -> None:
    """A pg_dump of the database contains neither the connector secret nor the access token."""
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed")
    secret = "sk-planted-" + secrets.token_hex(16)
    held: list[str] = []
    with running_broker(tmp_path / "data", database_url=postgres_url) as broker:
        _plant(broker.url, broker.owner_token, secret, held)
        with broker.admin() as c:
            c.get("/v1/audit")
    dump = subprocess.run(
        ["pg_dump", "--no-owner", postgres_url], capture_output=True, check=True, timeout=60
    ).stdout
    assert b"CREATE TABLE public.connectors" in dump
    for needle in _needles(secret, held):
        assert needle not in dump
