"""Test helpers, shipped for users: run a real broker in a thread or a process, and drive it.

    with running_broker(tmp_path) as broker:
        admin = broker.admin()
        admin.post("/v1/projects", json={"slug": "agent"})
        ...

The broker here is the real one (real store, real HTTP on a loopback port). Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx2

T = TypeVar("T")

__all__ = ["BrokerProcess", "RunningBroker", "free_port", "running_broker", "spawn_broker"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningBroker:
    url: str
    data_dir: Path
    owner_token: str = field(repr=False)
    broker: Any = None  # the in-process Broker, when run in a thread
    loop: asyncio.AbstractEventLoop | None = None  # its event loop

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run ``coroutine`` on the in-process broker's own event loop (e.g. ``broker.maintain_once()``)."""
        if self.loop is None:
            raise RuntimeError("only a broker run in a thread has a loop to run on")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def admin(self, timeout: float = 30) -> httpx2.Client:
        """An HTTP client carrying the owner credential."""
        return httpx2.Client(
            base_url=self.url,
            headers={"authorization": f"Bearer {self.owner_token}"},
            timeout=timeout,
        )

    def setup_project(
        self,
        project: str,
        connectors: Mapping[str, Mapping[str, Any]] | None = None,
        environments: tuple[str, ...] = ("development",),
    ) -> str:
        """Create ``project``, create and attach ``connectors`` ({uid: data}); return a development identity."""
        with self.admin() as c:
            _ok(c.post("/v1/projects", json={"slug": project}))
            for uid, data in dict(connectors or {}).items():
                service, name = uid.split("/")
                _ok(
                    c.post(
                        "/v1/connectors",
                        json={"service": service, "name": name, "data": dict(data)},
                    )
                )
                _ok(
                    c.post(
                        f"/v1/connectors/{uid}/links",
                        json={"project": project, "environments": list(environments)},
                    )
                )
            ident = _ok(c.post(f"/v1/projects/{project}/development-identity", json={}))
            token: str = ident["token"]
            return token


def _ok(response: httpx2.Response) -> Any:
    if response.status_code >= 400:
        raise AssertionError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response.json()


def _wait_ready(url: str, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the broker exited with {proc.returncode}")
        try:
            if httpx2.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the broker at {url} did not become ready")


@contextlib.contextmanager
def running_broker(
    data_dir: Path,
    *,
    database_url: str | None = None,
    allow_private_networks: bool = True,
    port: int | None = None,
    **settings: Any,
) -> Iterator[RunningBroker]:
    """Run a broker in a background thread (its own event loop) on ``port`` (default: a free one)."""
    import uvicorn

    from valetkey.server.app import create_app
    from valetkey.server.broker import Broker
    from valetkey.server.settings import Settings

    port = port or free_port()
    config = Settings(
        data_dir=data_dir,
        database_url=database_url,
        port=port,
        allow_private_networks=allow_private_networks,
        **settings,
    )
    broker = Broker.create(config)
    app = create_app(config, broker=broker)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False
        )
    )
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=serve, daemon=True, name=f"broker-{port}")
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, time.monotonic() + 30)
        owner = json.loads(config.cli_credentials_path.read_text())["token"]
        yield RunningBroker(url=url, data_dir=data_dir, owner_token=owner, broker=broker, loop=loop)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@dataclass
class BrokerProcess:
    proc: subprocess.Popen[bytes]
    handle: RunningBroker

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn_broker(
    data_dir: Path,
    *,
    database_url: str | None = None,
    owner_token: str | None = None,
    public_url: str | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> BrokerProcess:
    """Run ``valetkey serve`` as a separate process. Several may share one PostgreSQL database:
    give them the same ``data_dir`` (the same key files) and the same ``public_url``, as
    replicas behind one load balancer have."""
    port = port or free_port()
    args = [
        sys.executable,
        "-m",
        "valetkey.cli",
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--allow-private-networks",
        "--log-level",
        "warning",
    ]
    if database_url:
        args += ["--database-url", database_url]
    if public_url:
        args += ["--public-url", public_url]
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = data_dir / f"broker-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, time.monotonic() + 30, proc)
    except Exception:
        proc.kill()
        proc.wait(timeout=5)
        raise RuntimeError(
            f"broker failed to start: {log_path.read_text(errors='replace')[-2000:]}"
        ) from None
    token = owner_token or json.loads((data_dir / "cli.json").read_text())["token"]
    return BrokerProcess(proc, RunningBroker(url=url, data_dir=data_dir, owner_token=token))


async def fill_ledger(
    broker: Any,
    team_id: str,
    connector_id: str,
    project_id: str,
    n: int,
    *,
    value_format: str = "at_{}",
    batch: int = 2_000,
) -> list[str]:
    """Insert ``n`` issued tokens of an app subject with their sealed cache rows, in bulk (Core
    executemany, ``batch`` rows a statement), as the exchange stores them; returns the cache keys.

    ``broker`` is a ``valetkey.server.broker.Broker``; token ``i``'s value is ``value_format.format(i)``.
    For tests and benchmarks of revocation at scale: it writes straight to the store.
    """
    from datetime import timedelta

    from sqlalchemy import insert

    from valetkey.store import tables as t
    from valetkey.store.repo import cache_aad

    now = broker.clock.now()
    expires = now + timedelta(hours=1)
    keys: list[str] = []
    issued: list[dict[str, Any]] = []
    cached: list[dict[str, Any]] = []
    for i in range(n):
        tid = f"tok_fill{secrets.token_hex(8)}"
        key = secrets.token_hex(32)
        keys.append(key)
        issued.append(
            {
                "id": tid,
                "team_id": team_id,
                "connector_id": connector_id,
                "project_id": project_id,
                "environment": "development",
                "subject_type": "app",
                "subject_id": None,
                "subject_issuer": None,
                "scopes": None,
                "installation_id": None,
                "token_hash": secrets.token_hex(32),
                "created_at": now,
                "expires_at": expires,
                "revoked_at": None,
                "revocation": None,
            }
        )
        payload = {"token": value_format.format(i), "expiresAt": expires.isoformat(), "metadata": {}}
        cached.append(
            {
                "key_hash": key,
                "connector_id": connector_id,
                "issued_token_id": tid,
                "payload": broker.keyring.encrypt_json(payload, aad=cache_aad(key)),
                "expires_at": expires,
            }
        )
    for start in range(0, n, batch):
        async with broker.db.session.begin() as s:
            await s.execute(insert(t.IssuedToken), issued[start : start + batch])
            await s.execute(insert(t.CachedToken), cached[start : start + batch])
    return keys
