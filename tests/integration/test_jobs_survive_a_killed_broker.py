"""A webhook outlives the broker that queued it (issue 7.5's acceptance).

The app's receiver is down when consent ends, so the webhook job fails and waits for its
retry; the broker process is then killed (SIGKILL: no shutdown, no flush) and the receiver comes
up. On SQLite the same broker is restarted; on PostgreSQL a second replica is already running.
Either way the receiver gets that webhook exactly once, counted by the delivery id every
attempt carries (the job's id, in ``Valetkey-Delivery`` and in the signed ``delivery`` claim).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from tests.integration.test_cli import clean_env, cli
from tests.integration.test_consent_flows import Tls, _make_tls

from valetkey.testing import BrokerProcess, RunningBroker, free_port, spawn_broker

#: Short retries and leases, so that the test takes seconds.
JOB_ENV = {
    "VALETKEY_JOB_RETRY_BASE": "0.5",
    "VALETKEY_JOB_RETRY_MAX": "1",
    "VALETKEY_JOB_POLL": "0.2",
    "VALETKEY_JOB_TIMEOUT": "3",
    "VALETKEY_JOB_LEASE": "4",
}
OAUTH = {
    "tokenUrl": "http://127.0.0.1:9/token",  # never contacted: consent is refused at the callback
    "authorizationUrl": "http://127.0.0.1:9/authorize",
    "clientId": "hook-client",
    "clientSecret": "hook-secret",
    "grants": ["authorization_code"],
    "scopes": ["read"],
}


class CountingReceiver:
    """An HTTPS receiver on a port fixed in advance (so it can be down, then up), counting deliveries
    per ``Valetkey-Delivery`` id and answering 204 to each, as a de-duplicating app would."""

    def __init__(self, tls: Tls, port: int) -> None:
        self.port = port
        self.tls = tls
        self.deliveries: list[tuple[str, dict[str, str], bytes]] = []
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.deliveries.append(
                        (headers.get("valetkey-delivery", ""), headers, body)
                    )
                    receiver._lock.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float) -> None:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(f"{len(self.deliveries)} deliveries, expected {count}")

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    directory = tmp_path / "tls"
    directory.mkdir()
    return _make_tls(directory)


@pytest.fixture
def receiver(tls: Tls) -> Iterator[CountingReceiver]:
    server = CountingReceiver(tls, free_port())  # down until the test starts it
    try:
        yield server
    finally:
        server.close()


def _ok(response: httpx2.Response) -> Any:
    assert response.status_code < 300, (response.request.url.path, response.text)
    return response.json()


def _refused_consent(broker: RunningBroker, hook: str) -> None:
    """A project whose user consent, with ``hook`` as its webhook, the provider refuses."""
    with broker.admin() as admin:
        _ok(admin.post("/v1/projects", json={"slug": "hooked"}))
        _ok(
            admin.post("/v1/connectors", json={"service": "oauth", "name": "hooked", "data": OAUTH})
        )
        _ok(
            admin.post(
                "/v1/connectors/oauth/hooked/links",
                json={"project": "hooked", "environments": ["development"], "subjects": ["user"]},
            )
        )
        identity = _ok(admin.post("/v1/projects/hooked/development-identity", json={}))["token"]
    started = _ok(
        httpx2.post(
            f"{broker.url}/v1/connect/authorize/oauth%2Fhooked",
            json={"subject": {"type": "user", "id": "alice"}, "webhook": hook},
            headers={"authorization": f"Bearer {identity}"},
            timeout=30,
        )
    )
    state = parse_qs(urlsplit(started["url"]).query)["state"][0]
    page = httpx2.get(
        f"{broker.url}/v1/connect/callback", params={"state": state, "error": "access_denied"}
    )
    assert page.status_code == 400, page.text


def _jobs(broker: RunningBroker) -> list[dict[str, Any]]:
    with broker.admin() as admin:
        jobs: list[dict[str, Any]] = _ok(admin.get("/v1/jobs"))
    return [job for job in jobs if job["kind"] == "webhook"]


def _failed_once(broker: RunningBroker, timeout: float = 20) -> dict[str, Any]:
    """The webhook job, once an attempt at the down receiver has failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = _jobs(broker)
        if jobs and jobs[0]["attempts"] >= 1 and jobs[0]["lastError"]:
            assert jobs[0]["status"] in ("queued", "running"), jobs[0]
            return jobs[0]
        time.sleep(0.1)
    raise AssertionError(f"the webhook job never failed an attempt: {_jobs(broker)}")


def _done(broker: RunningBroker, job_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in _jobs(broker):
            if job["id"] == job_id and job["status"] == "done":
                return job
        time.sleep(0.1)
    raise AssertionError(f"the webhook job {job_id} never finished: {_jobs(broker)}")


def _check_exactly_once(
    receiver: CountingReceiver, broker: RunningBroker, job_id: str, hook: str
) -> None:
    receiver.wait(1, timeout=30)
    _done(broker, job_id)
    time.sleep(3)  # longer than a retry and most of a lease: a second delivery would be here by now
    assert [delivery for delivery, _h, _b in receiver.deliveries] == [job_id]
    _id, headers, body = receiver.deliveries[0]
    event = json.loads(body)
    assert (event["type"], event["status"], event["error"]) == (
        "authorization.failed",
        "denied",
        "access_denied",
    )
    jwks = httpx2.get(f"{broker.url}/.well-known/jwks.json").json()
    claims = jwt.decode(
        headers["valetkey-signature"], KeySet.import_key_set(jwks), algorithms=["ES256"]
    ).claims
    assert (claims["aud"], claims["delivery"]) == (hook, job_id)


def _kill(process: BrokerProcess) -> None:
    process.proc.kill()  # SIGKILL: no lifespan shutdown, nothing flushed or given back
    process.proc.wait(timeout=10)


def test_a_webhook_due_when_the_sqlite_broker_is_killed_is_delivered_once_after_restart(
    tmp_path: Path, tls: Tls, receiver: CountingReceiver
) -> None:
    """SQLite: kill the broker while the webhook waits for its retry, bring the receiver up,
    restart the broker on the same data directory: the receiver gets the webhook exactly once."""
    data = tmp_path / "data"
    env = {**JOB_ENV, "VALETKEY_CA_FILE": str(tls.ca_file)}
    hook = f"{receiver.url}/hooks/consent"
    first = spawn_broker(data, env=env)
    try:
        _refused_consent(first.handle, hook)
        job = _failed_once(first.handle)
    finally:
        _kill(first)
    receiver.start()
    time.sleep(1.5)  # the retry comes due while no broker runs
    assert receiver.deliveries == []
    second = spawn_broker(data, env=env, owner_token=first.handle.owner_token)
    try:
        _check_exactly_once(receiver, second.handle, job["id"], hook)
    finally:
        second.stop()


def test_a_webhook_due_when_a_postgres_replica_is_killed_is_delivered_once_by_the_other(
    postgres_url: str, tmp_path: Path, tls: Tls, receiver: CountingReceiver
) -> None:
    """PostgreSQL: two replicas; kill the one the consent ended on while the webhook waits for its
    retry (or is leased to it), bring the receiver up: the other replica delivers it exactly once."""
    data = tmp_path / "data"
    env = {**JOB_ENV, "VALETKEY_CA_FILE": str(tls.ca_file)}
    # One public URL for both (the issuer of their identities); loopback, so that http is
    # allowed in the provider's redirect URI. The test calls each replica directly.
    public = f"http://127.0.0.1:{free_port()}"
    hook = f"{receiver.url}/hooks/consent"
    a = spawn_broker(data, database_url=postgres_url, public_url=public, env=env)
    b = spawn_broker(
        data,
        database_url=postgres_url,
        public_url=public,
        env=env,
        owner_token=a.handle.owner_token,
    )
    try:
        _refused_consent(a.handle, hook)
        job = _failed_once(b.handle)
        _kill(a)
        receiver.start()
        _check_exactly_once(receiver, b.handle, job["id"], hook)
    finally:
        a.stop()
        b.stop()


def test_a_dead_webhook_is_listed_by_the_cli_and_redelivered_once_on_retry(
    tmp_path: Path, tls: Tls, receiver: CountingReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook whose attempts run out while the receiver is down is dead-lettered and stays
    visible (`valetkey jobs list --status dead`, GET /v1/jobs?status=dead, the dead gauge);
    `valetkey jobs retry` redelivers it, once, when the receiver is back."""
    data = tmp_path / "data"
    env = {**JOB_ENV, "VALETKEY_JOB_ATTEMPTS": "2", "VALETKEY_CA_FILE": str(tls.ca_file)}
    hook = f"{receiver.url}/hooks/consent"
    process = spawn_broker(data, env=env)
    try:
        broker = process.handle
        _refused_consent(broker, hook)
        deadline = time.monotonic() + 20
        while not any(job["status"] == "dead" for job in _jobs(broker)):
            assert time.monotonic() < deadline, _jobs(broker)
            time.sleep(0.1)
        cli_env = clean_env(VALETKEY_DATA_DIR=str(data))
        listed = cli(["jobs", "list", "--status", "dead", "--format", "json"], cli_env, monkeypatch)
        assert listed.exit_code == 0, listed.stderr
        (dead,) = json.loads(listed.stdout)
        assert (dead["kind"], dead["status"], dead["attempts"]) == ("webhook", "dead", 2)
        assert dead["lastError"] == "webhook authorization.failed: ConnectError"
        assert hook not in listed.stdout  # the payload (URL, body) is never listed
        deadline = time.monotonic() + 10
        while "valetkey_jobs_dead 1.0" not in httpx2.get(f"{broker.url}/metrics").text:
            assert time.monotonic() < deadline, "the dead gauge never counted the dead job"
            time.sleep(0.2)

        receiver.start()
        retried = cli(["jobs", "retry", dead["id"], "--format", "json"], cli_env, monkeypatch)
        assert retried.exit_code == 0, retried.stderr
        assert json.loads(retried.stdout)["status"] == "queued"
        _check_exactly_once(receiver, broker, dead["id"], hook)
        again = cli(["jobs", "retry", dead["id"]], cli_env, monkeypatch)
        assert again.stderr.startswith("error[not_found]: ")  # done, not dead: nothing to retry
    finally:
        process.stop()
