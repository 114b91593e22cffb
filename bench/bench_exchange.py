"""Benchmark the exchange's hot path against the broker's own bare endpoint, in one run.

    .venv/bin/python bench/bench_exchange.py                  # SQLite in a temp dir
    .venv/bin/python bench/bench_exchange.py --database-url postgresql://postgres@127.0.0.1:5432/test

Starts ONE broker process (``valetkey.server.run.serve``: uvicorn, one worker) on a free
loopback port with a temporary data directory, creates a project, an api-key connector and a
development identity through the management API, warms the token cache, then measures:

1. saturation throughput of ``GET /healthz`` and of ``POST /v1/connect/token/{uid}`` (cache hit),
   alternated, same duration and connections, and their ratio;
2. latency percentiles of the exchange at a fixed rate of half its measured saturation
   (open loop: latency counts from each request's scheduled send time);
3. the broker's resident memory (``VmRSS``) idle after startup and after the load.

Saturation uses ``wrk`` when it is installed (``apt-get install wrk``), else a built-in asyncio
closed-loop generator; the paced run always uses the built-in open-loop generator. Each
generator's CPU cost per request is measured, so its own ceiling is printed next to the result.
With ``--database-url`` pointing at PostgreSQL, the benchmark creates a fresh database on that
server and drops it afterwards; the given database itself is only used to run CREATE/DROP.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from valetkey.testing import RunningBroker, free_port

UID = "api-key/bench"
OAUTH_UID = "oauth/bench"
EXCHANGE_PATH = "/v1/connect/token/api-key%2Fbench"
OAUTH_PATH = "/v1/connect/token/oauth%2Fbench"
EXCHANGE_BODY = b'{"subject":{"type":"app"}}'
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent
PEER_CLIENT, PEER_SECRET = "bench-app", "bench-secret-" + secrets.token_hex(8)
PEER_BODY = b"grant_type=client_credentials&scope=read"

_SERVE = (
    "import sys; from pathlib import Path; "
    "from valetkey.server.run import serve; from valetkey.server.settings import Settings; "
    "serve(Settings(data_dir=Path(sys.argv[1]), port=int(sys.argv[2]), "
    "database_url=sys.argv[3] or None, allow_private_networks=True), log_level='warning', "
    "echo=lambda _line: None, loop=sys.argv[4], http=sys.argv[5])"
)


# -- the broker process -------------------------------------------------------------------


@dataclass
class Server:
    """A process under measurement: its pid (for CPU and memory) and where it listens."""

    pid: int
    url: str
    port: int

    def rss_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB, from /proc/PID/status."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
        return values["VmRSS"], values["VmHWM"]

    def main_thread_wait(self) -> float:
        """Seconds the broker's main (event-loop) thread spent runnable but waiting for a CPU."""
        return int(Path(f"/proc/{self.pid}/task/{self.pid}/schedstat").read_text().split()[1]) / 1e9

    def cpu_seconds(self) -> float:
        """User + system CPU time of the whole broker process (every thread)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Broker(Server):
    handle: RunningBroker


@contextlib.contextmanager
def _process(name: str, argv: list[str], log_path: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv``, wait until ``ready_url`` answers 200, stop it (SIGTERM, then SIGKILL) afterwards."""
    log = log_path.open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: see {log.name}")
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(ready_url, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not become ready in 60 s")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@contextlib.contextmanager
def broker_process(data_dir: Path, database_url: str | None, stack: str) -> Iterator[Broker]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    loop, http = ("auto", "auto") if stack == "auto" else ("asyncio", "h11")
    argv = [sys.executable, "-c", _SERVE, str(data_dir), str(port), database_url or "", loop, http]
    with _process("the broker", argv, data_dir.parent / "broker.log", f"{url}/readyz") as proc:
        credentials = data_dir / "cli.json"
        if not credentials.exists():
            raise RuntimeError("the database was not empty: the broker wrote no owner credential")
        owner = json.loads(credentials.read_text())["token"]
        yield Broker(proc.pid, url, port, RunningBroker(url=url, data_dir=data_dir, owner_token=owner))


@contextlib.contextmanager
def bare_process(tmp: Path) -> Iterator[Server]:
    """``bench/bare_app.py``: one Starlette endpoint on uvicorn with uvloop and httptools."""
    for module in ("uvloop", "httptools"):
        __import__(module)  # the baseline is the fast stack or nothing: fail loudly without it
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, str(ROOT / "bench" / "bare_app.py"), str(port)]
    with _process("the bare app", argv, tmp / "bare.log", f"{url}/readyz") as proc:
        yield Server(proc.pid, url, port)


@contextlib.contextmanager
def oidc_provider_process() -> Iterator[Server | None]:
    """The tests' oidc-provider (node) with one client-credentials client; None when it is not installed."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.peers.oidc import OidcProviderPeer, PeerNotInstalled, confidential_client
    finally:
        sys.path.remove(str(ROOT))
    config = {
        "scopes": ["read"],
        "clients": [confidential_client(PEER_CLIENT, PEER_SECRET, scope="read")],
        "ttl": {"ClientCredentials": 86400},
    }
    try:
        peer = OidcProviderPeer.start(config)
    except PeerNotInstalled as exc:
        print(f"note: no oidc-provider baseline: {exc}", file=sys.stderr)
        yield None
        return
    try:
        port = int(peer.url.rsplit(":", 1)[1])
        yield Server(peer._process.pid, peer.url, port)
    finally:
        peer.stop()


@contextlib.contextmanager
def fresh_postgres(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url``; dropped afterwards."""
    import asyncpg

    name = f"valetkey_bench_{secrets.token_hex(5)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- a small HTTP/1.1 keep-alive client over raw sockets ------------------------------------


def build_request(
    method: str, path: str, port: int, body: bytes = b"", token: str = "", *,
    authorization: str = "", content_type: str = "application/json",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if token or authorization:
        lines.append(f"Authorization: {authorization or 'Bearer ' + token}")
    if method == "POST":
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, on_done: Any) -> None:
        self.on_done = on_done
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.tag: float = 0.0
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, request: bytes, tag: float) -> None:
        self.tag = tag
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
        if len(buf) < end + 4 + length:
            return
        status = int(buf[9:12])
        del buf[: end + 4 + length]
        self.on_done(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def _open(port: int, n: int, on_done: Any) -> list[_Conn]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(n):
        _, proto = await loop.create_connection(lambda: _Conn(on_done), "127.0.0.1", port)
        conns.append(proto)
    return conns


@dataclass
class PacedResult:
    rate: float
    sent: int
    done: int
    errors: int
    latencies_ms: list[float]
    send_lag_ms: list[float]  # sent - due: the two parts below, per request
    late_ms: list[float]  # found due - due: the generator's own lateness (its loop, its CPU)
    conn_wait_ms: list[float]  # sent - found due: every connection was busy (the server's slowness)
    wall: float
    cpu: float
    broker_cpu: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    dues: list[float] = field(default_factory=list)  # perf_counter() scheduled send times, same order


async def paced(port: int, request: bytes, rate: float, duration: float, conns: int) -> PacedResult:
    """Open loop: request i is due at t0 + i/rate whatever happened before; latency counts from then."""
    free: deque[_Conn] = deque()
    backlog: deque[tuple[float, float]] = deque()  # (due, when the generator found it due)
    latencies: list[float] = []
    dues: list[float] = []
    lags: list[float] = []
    lates: list[float] = []
    waits: list[float] = []
    statuses: dict[int, int] = {}
    total = int(rate * duration)
    finished = asyncio.get_running_loop().create_future()
    clock = time.perf_counter

    def on_done(conn: _Conn, status: int) -> None:
        now = clock()
        latencies.append(now - conn.tag)
        dues.append(conn.tag)
        statuses[status] = statuses.get(status, 0) + 1
        if backlog:
            due, found = backlog.popleft()
            lags.append(now - due)
            lates.append(found - due)
            waits.append(now - found)
            conn.send(request, due)
        else:
            free.append(conn)
        if len(latencies) == total and not finished.done():
            finished.set_result(None)

    pool = await _open(port, conns, on_done)
    free.extend(pool)
    cpu0 = time.process_time()
    t0 = clock() + 0.01
    i = 0
    while i < total:
        now = clock()
        due = t0 + i / rate
        if due > now:
            await asyncio.sleep(due - now)
            now = clock()
        while i < total and t0 + i / rate <= now:
            due = t0 + i / rate
            if free:
                lags.append(now - due)
                lates.append(now - due)
                waits.append(0.0)
                free.popleft().send(request, due)
            else:
                backlog.append((due, now))
            i += 1
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(finished, 30)
    wall = clock() - t0
    cpu = time.process_time() - cpu0
    for conn in pool:
        assert conn.transport is not None
        conn.transport.close()
    errors = sum(n for s, n in statuses.items() if s != 200)
    return PacedResult(
        rate, total, len(latencies), errors, [x * 1000 for x in latencies], [x * 1000 for x in lags],
        [x * 1000 for x in lates], [x * 1000 for x in waits], wall, cpu,
        statuses=statuses,
        dues=dues,
    )


async def closed_loop(port: int, request: bytes, duration: float, conns: int) -> tuple[int, int, float, float]:
    """Each connection sends its next request when the previous answer arrives: (done, errors, wall, cpu)."""
    counts = {"done": 0, "errors": 0}
    stop = False

    def on_done(conn: _Conn, status: int) -> None:
        counts["done"] += 1
        if status != 200:
            counts["errors"] += 1
        if not stop:
            conn.send(request, 0.0)

    pool = await _open(port, conns, on_done)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for conn in pool:
        conn.send(request, 0.0)
    await asyncio.sleep(duration)
    stop = True
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    done = counts["done"]
    await asyncio.sleep(0.2)
    for conn in pool:
        assert conn.transport is not None
        conn.transport.close()
    return done, counts["errors"], wall, cpu


# -- what the machine is doing ------------------------------------------------------------


def machine_busy() -> float:
    """CPU seconds every process on the machine spent running (user + system, all cores) since boot.

    Interrupt and softirq time is left out: on loopback it is mostly our own traffic.
    """
    user, nice, system = (int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:4])
    return (user + nice + system) / CLK_TCK


@dataclass
class Window:
    """CPU accounting over one measurement: the broker, the generator and everything else."""

    wall: float = 0.0
    broker: float = 0.0
    generator: float = 0.0
    machine: float = 0.0
    broker_wait: float = 0.0  # seconds the broker's event-loop thread waited for a CPU

    @property
    def others(self) -> float:
        """CPU seconds used by processes other than the broker and the generator."""
        return max(0.0, self.machine - self.broker - self.generator)


class Meter:
    def __init__(self, broker: Server) -> None:
        self.broker = broker

    def __enter__(self) -> Window:
        self.window = Window()
        self.t0 = time.perf_counter()
        self.b0 = self.broker.cpu_seconds()
        self.m0 = machine_busy()
        self.w0 = self.broker.main_thread_wait()
        return self.window

    def __exit__(self, *_exc: object) -> None:
        w = self.window
        w.wall = time.perf_counter() - self.t0
        w.broker = self.broker.cpu_seconds() - self.b0
        w.machine = machine_busy() - self.m0
        w.broker_wait = self.broker.main_thread_wait() - self.w0


# -- saturation ----------------------------------------------------------------------------


@dataclass
class Target:
    """One endpoint under load: who serves it, the request (for wrk and for the paced generator)."""

    name: str
    label: str
    server: Server
    method: str
    path: str
    body: bytes = b""
    authorization: str = ""
    content_type: str = "application/json"

    def request(self) -> bytes:
        return build_request(
            self.method, self.path, self.server.port, self.body,
            authorization=self.authorization, content_type=self.content_type,
        )

    def wrk_script(self, directory: Path) -> Path | None:
        if self.method == "GET" and not self.authorization:
            return None
        lines = [f'wrk.method = "{self.method}"']
        if self.body:
            lines.append(f"wrk.body = '{self.body.decode()}'")
            lines.append(f'wrk.headers["Content-Type"] = "{self.content_type}"')
        if self.authorization:
            lines.append(f'wrk.headers["Authorization"] = "{self.authorization}"')
        path = directory / f"{self.name}.lua"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path


@dataclass
class Saturation:
    name: str
    rps: float
    requests: int
    errors: int
    cpu: Window

    @property
    def gen_ceiling(self) -> float:
        """Requests per second the generator could drive with one full core."""
        return self.requests / self.cpu.generator if self.cpu.generator > 0 else float("inf")


def saturate(target: Target, script: Path | None, *, duration: float, conns: int) -> Saturation:
    wrk = shutil.which("wrk")
    with Meter(target.server) as window:
        if wrk is not None:
            args = [wrk, "-t1", f"-c{conns}", f"-d{duration:g}s", "--timeout", "5s"]
            if script is not None:
                args += ["-s", str(script)]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            out = subprocess.run(
                [*args, target.server.url + target.path], capture_output=True, text=True, check=True
            ).stdout
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            window.generator = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            total = int(_find(r"(\d+) requests in", out))
            errors = int(_find(r"Non-2xx or 3xx responses: (\d+)", out, "0"))
            errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
            rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
        else:
            total, errors, wall, window.generator = asyncio.run(
                closed_loop(target.server.port, target.request(), duration, conns)
            )
            rps = total / wall
    return Saturation(target.name, rps, total, errors, window)


def _find(pattern: str, text: str, default: str | None = None) -> str:
    m = re.search(pattern, text)
    if m is None:
        if default is not None:
            return default
        raise RuntimeError(f"unexpected load-generator output:\n{text}")
    return m.group(1)


# -- the run -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def warm(broker: Broker, identity: str, path: str, n: int) -> str:
    """Exchange ``n`` times; every answer must be the same cached token (one ledger row)."""
    ids = set()
    with httpx2.Client(base_url=broker.url, headers={"authorization": f"Bearer {identity}"}) as c:
        for _ in range(n):
            r = c.post(path, content=EXCHANGE_BODY, headers={"content-type": "application/json"})
            if r.status_code != 200:
                raise RuntimeError(f"warm-up exchange failed: {r.status_code} {r.text}")
            ids.add(r.json()["tokenId"])
    if len(ids) != 1:
        raise RuntimeError(f"the warm-up minted {len(ids)} tokens; expected one cached token")
    return ids.pop()


def wait_idle(broker: Server, *, below: float = 0.05, window: float = 0.5, timeout: float = 30) -> None:
    """Wait until the broker uses less than ``below`` of a core over ``window`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = broker.cpu_seconds()
        time.sleep(window)
        if broker.cpu_seconds() - before < below * window:
            return
    raise TimeoutError("the broker stayed busy after the load stopped")


def usage(broker: Broker) -> dict[str, int]:
    with broker.handle.admin() as c:
        counters: dict[str, int] = c.get("/v1/usage").json()["counters"]
        return counters


def access_token(broker: Broker, project: str) -> str:
    """A ``vk_at_`` access token for the project's development environment."""
    with broker.handle.admin() as c:
        r = c.post(f"/v1/projects/{project}/access-tokens", json={"environment": "development"})
        if r.status_code != 201:
            raise RuntimeError(f"creating an access token failed: {r.status_code} {r.text}")
        token: str = r.json()["token"]
        return token


@dataclass
class Report:
    store: str
    stack: str
    generator: str
    targets: list[Target]
    runs: dict[str, list[Saturation]]
    paced: PacedResult
    paced_cpu: Window
    rss_idle: int
    rss_ready: int
    rss_after: int
    rss_peak: int
    minted: int
    token_ids: list[str]
    elapsed: float = 0.0
    baseline: PacedResult | None = None


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="valetkey-bench-") as tmp, contextlib.ExitStack() as stack:
        db_url = args.database_url
        if db_url and db_url.startswith(("postgres://", "postgresql://")):
            db_url = stack.enter_context(fresh_postgres(db_url))
        store = "PostgreSQL" if db_url else "SQLite"
        t_start = time.perf_counter()
        bare = stack.enter_context(bare_process(Path(tmp)))
        peer = stack.enter_context(oidc_provider_process()) if args.oidc_provider else None
        broker = stack.enter_context(broker_process(Path(tmp) / "data", db_url, args.stack))
        time.sleep(args.settle)
        rss_idle, _ = broker.rss_kb()
        connectors: dict[str, dict[str, Any]] = {UID: {"apiKey": "sk-bench-" + secrets.token_hex(8)}}
        if peer is not None:
            connectors[OAUTH_UID] = {
                "tokenUrl": f"{peer.url}/token", "clientId": PEER_CLIENT, "clientSecret": PEER_SECRET,
                "scopes": ["read"],
            }
        oidc_identity = broker.handle.setup_project("bench", connectors)
        at_identity = access_token(broker, "bench")
        token_ids = sorted({
            warm(broker, oidc_identity, EXCHANGE_PATH, 200),
            warm(broker, at_identity, EXCHANGE_PATH, 200),
            *([warm(broker, oidc_identity, OAUTH_PATH, 200)] if peer is not None else []),
        })
        rss_ready, _ = broker.rss_kb()

        def exchange(name: str, label: str, identity: str, path: str = EXCHANGE_PATH) -> Target:
            return Target(name, label, broker, "POST", path, EXCHANGE_BODY, f"Bearer {identity}")

        targets = [
            Target("bare", "bare Starlette POST (uvloop+httptools)", bare, "POST", "/token", EXCHANGE_BODY),
            Target("healthz", "broker GET /healthz", broker, "GET", "/healthz"),
            exchange("exchange", "exchange, OIDC identity, api-key", oidc_identity),
            exchange("exchange_at", "exchange, vk_at_ token, api-key", at_identity),
        ]
        if peer is not None:
            targets.append(exchange("exchange_oauth", "exchange, OIDC identity, OAuth", oidc_identity, OAUTH_PATH))
            basic = base64.b64encode(f"{PEER_CLIENT}:{PEER_SECRET}".encode()).decode()
            targets.append(Target(
                "oidc_provider", "oidc-provider client_credentials", peer, "POST", "/token", PEER_BODY,
                f"Basic {basic}", "application/x-www-form-urlencoded",
            ))
        scripts = {t.name: t.wrk_script(Path(tmp)) for t in targets}

        def sat(t: Target, duration: float) -> Saturation:
            return saturate(t, scripts[t.name], duration=duration, conns=args.connections)

        for t in targets:  # unmeasured: let every path settle under load
            sat(t, args.warmup)
        runs: dict[str, list[Saturation]] = {t.name: [] for t in targets}
        for _ in range(args.rounds):
            for t in targets:
                runs[t.name].append(sat(t, args.duration))
        bad = [r for rs in runs.values() for r in rs if r.errors]
        if bad:
            print(f"error: {bad[0].name} answered {bad[0].errors} errors", file=sys.stderr)
            return 1
        rate = statistics.mean(r.rps for r in runs["exchange"]) * args.rate_fraction
        request = targets[2].request()
        # Saturation leaves seconds of audit events queued: measure the paced run in steady state.
        wait_idle(broker)
        asyncio.run(paced(broker.port, request, rate, args.warmup, args.connections))
        with Meter(broker) as paced_cpu:
            p = asyncio.run(paced(broker.port, request, rate, args.latency_duration, args.connections))
        paced_cpu.generator = p.cpu
        if p.errors or p.done != p.sent:
            print(f"error: the paced run answered {p.statuses}, {p.done}/{p.sent} done", file=sys.stderr)
            return 1
        # Baseline: the bare endpoint at the same rate, same generator, same connections. A tail it
        # shares with the exchange comes from the stack or the machine, not from the exchange.
        baseline = None
        if args.baseline_duration > 0:
            baseline = asyncio.run(
                paced(bare.port, targets[0].request(), rate, args.baseline_duration, args.connections)
            )
            if baseline.errors or baseline.done != baseline.sent:
                print(f"error: the paced bare run answered {baseline.statuses}", file=sys.stderr)
                return 1
        time.sleep(args.settle)
        rss_after, rss_peak = broker.rss_kb()
        wait_idle(broker)
        minted = usage(broker).get("tokensMinted", 0)
        report = Report(
            store, args.stack, "wrk" if shutil.which("wrk") else "python-asyncio", targets, runs, p,
            paced_cpu, rss_idle, rss_ready, rss_after, rss_peak, minted, token_ids,
            time.perf_counter() - t_start, baseline,
        )
    print_report(args, report)
    if minted != len(token_ids):
        print("error: the exchange minted again during the run: not every request was a cache hit", file=sys.stderr)
        return 1
    return 0


def print_report(args: argparse.Namespace, r: Report) -> None:
    def pct(part: float, whole: float) -> str:
        return f"{100 * part / whole:.0f}%"

    rps = {name: statistics.mean(x.rps for x in rs) for name, rs in r.runs.items()}
    print(f"\nValetkey exchange benchmark  [store: {r.store}; broker stack: {r.stack}; generator: "
          f"{r.generator}; {args.connections} keep-alive connections; {args.rounds} x {args.duration:g} s "
          "per endpoint, alternated]")
    print(f"{'saturation':<40}{'req/s':>8}  {'rounds':<17}{'CPU':>6}{'us/req':>8}{'gen ceiling':>12}"
          f"{'others':>8}")
    others = []
    for t in r.targets:
        rs = r.runs[t.name]
        wall = sum(x.cpu.wall for x in rs)
        us = 1e6 * sum(x.cpu.broker for x in rs) / sum(x.requests for x in rs)
        ceiling = min(x.gen_ceiling for x in rs)
        rounds = " / ".join(f"{x.rps:,.0f}" for x in rs)
        others.append(sum(x.cpu.others for x in rs) / wall)
        print(f"{t.label:<40}{rps[t.name]:>8,.0f}  {rounds:<17}{pct(sum(x.cpu.broker for x in rs), wall):>6}"
              f"{us:>8.0f}{ceiling:>12,.0f}{pct(sum(x.cpu.others for x in rs), wall):>8}")
    print("(CPU and us/req: of the process serving that row: the bare app, the broker or node)")
    exchanges = [t for t in r.targets if t.name.startswith("exchange")]
    for t in [*exchanges, next(t for t in r.targets if t.name == "healthz")]:
        line = f"RATIO {t.name} / bare {rps[t.name] / rps['bare']:.2f}"
        line += f" (target >= 0.50: {'ok' if rps[t.name] / rps['bare'] >= 0.5 else 'MISSED'})"
        if "oidc_provider" in rps and t.name != "healthz":
            ratio = rps[t.name] / rps["oidc_provider"]
            line += f";  / oidc-provider {ratio:.2f} (target >= 3: {'ok' if ratio >= 3 else 'MISSED'})"
        print(line)

    p, w = r.paced, r.paced_cpu
    lat, lag = p.latencies_ms, p.send_lag_ms
    p99 = percentile(lat, 99)
    print(f"\nexchange (OIDC identity, api-key) at {args.rate_fraction:.0%} of saturation, open loop: "
          f"{p.rate:,.0f} req/s scheduled, {p.done / p.wall:,.0f} achieved, {p.done:,} requests in {p.wall:.1f} s")
    print(f"{'milliseconds':<40}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'max':>8}")
    rows = [
        ("latency from scheduled send", lat),
        ("  of which generator send lag", lag),
        ("    generator late (its own loop)", p.late_ms),
        ("    all connections busy (server)", p.conn_wait_ms),
    ]
    if r.baseline is not None:
        rows.append((f"bare endpoint, same rate, {args.baseline_duration:g} s", r.baseline.latencies_ms))
    for label, xs in rows:
        print(f"{label:<40}" + "".join(f"{percentile(xs, q):>8.2f}" for q in (50, 90, 99, 99.9)) + f"{max(xs):>8.2f}")
    print(f"p99 target <= 10 ms: {'ok' if p99 <= 10 else 'MISSED'}.  broker CPU {pct(w.broker, w.wall)}, waited "
          f"{1000 * w.broker_wait:.0f} ms for a core; generator CPU {pct(w.generator, w.wall)} (ceiling "
          f"{p.done / w.generator:,.0f} req/s); other processes {pct(w.others, w.wall)} of a core")

    mib = 1024
    print(f"\n{'broker resident memory (VmRSS)':<40}{'MiB':>8}")
    print(f"{'idle, after startup':<40}{r.rss_idle / mib:>8.1f}  target < 150 MB: "
          f"{'ok' if r.rss_idle * 1024 < 150e6 else 'MISSED'}")
    print(f"{'after setup and warm-up':<40}{r.rss_ready / mib:>8.1f}")
    print(f"{'after the load':<40}{r.rss_after / mib:>8.1f}  (peak VmHWM {r.rss_peak / mib:.1f})")
    print(f"\ntokens minted during the run: {r.minted} ({len(r.token_ids)} = every exchange was a cache hit); "
          f"whole run {r.elapsed:.0f} s")
    if w.others > 0.15 * w.wall or any(o > 0.15 for o in others):
        print("note: other processes used this machine's CPUs during the run; numbers are noisier than usual")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", help="a PostgreSQL server's URL: a fresh database is created on it (default: SQLite)"
    )
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per saturation run (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over every endpoint (default 2)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per endpoint (default 1)")
    parser.add_argument("--rate-fraction", type=float, default=0.5, help="paced rate, fraction of saturation")
    parser.add_argument("--latency-duration", type=float, default=10.0, help="seconds of the paced run (default 10)")
    parser.add_argument(
        "--baseline-duration", type=float, default=5.0,
        help="seconds of the paced bare endpoint at the same rate after the exchange's paced run (0: skip; default 5)",
    )
    parser.add_argument("--settle", type=float, default=1.0, help="seconds idle before reading RSS (default 1)")
    parser.add_argument(
        "--stack", choices=("auto", "asyncio"), default="auto",
        help="the broker's uvicorn loop and parser: auto (uvloop + httptools when installed, as `valetkey serve`) "
        "or asyncio (the stdlib loop and h11, for a before/after)",
    )
    parser.add_argument(
        "--no-oidc-provider", dest="oidc_provider", action="store_false",
        help="skip the oidc-provider baseline and the OAuth exchange (they need node and tests/peers installed)",
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
