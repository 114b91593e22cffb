"""``valetkey serve``: run the broker under uvicorn and tell a newcomer what to do next."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import sys
from collections.abc import Callable

import uvicorn

from valetkey.server.app import create_app
from valetkey.server.broker import Broker
from valetkey.server.settings import Settings
from valetkey.store.management import ManagementRepository


def serve(
    settings: Settings,
    *,
    log_level: str = "info",
    echo: Callable[[str], None] | None = None,
    loop: str = "auto",
    http: str = "auto",
) -> None:
    """Start the broker and block until it is stopped (SIGINT/SIGTERM).

    Raises ``BrokerStartError`` (a message for people) when the port is taken, or another
    broker runs on the same data directory with the embedded SQLite store.

    ``loop`` and ``http`` are uvicorn's: ``auto`` takes ``uvloop`` and ``httptools`` when they are
    installed (the ``server`` extra installs both where they build), else the stdlib loop and
    ``h11``; the benchmark passes ``asyncio``/``h11`` to measure the difference.
    """
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    sqlite = settings.resolved_database_url.startswith("sqlite")
    with DataDirLock(settings) if sqlite else contextlib.nullcontext():
        _check_port_free(settings)
        _run(settings, log_level, say, loop=loop, http=http)


def _run(
    settings: Settings, log_level: str, say: Callable[[str], None], *, loop: str, http: str
) -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    broker = Broker.create(settings)
    app = create_app(settings, broker=broker)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        server_header=False,
        lifespan="on",
        loop=loop,
        http=http,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.05)
        first_project = await _has_no_project(broker)
        _announce(broker, settings, say, first_project=first_project)
        await task

    asyncio.run(main())
    if not server.started:
        # uvicorn logged why (the port was taken meanwhile, a bad address); exit nonzero.
        raise BrokerStartError(f"the broker did not start on {settings.host}:{settings.port}")


class BrokerStartError(RuntimeError):
    """The broker cannot start: ``message`` says why, ``hint`` what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def _check_port_free(settings: Settings) -> None:
    """Refuse, with a plain message, a port another process listens on (uvicorn would print a
    raw ``[Errno 98]`` and exit 1)."""
    try:
        infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except OSError:
        return  # uvicorn reports an unknown host itself
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return  # uvicorn reports other bind errors
            other = settings.port + 1
            raise BrokerStartError(
                f"port {settings.port} on {settings.host} is already in use "
                "(another `valetkey serve`?)",
                f'Stop it, or choose another port: valetkey serve --port {other} '
                f'(make serve ARGS="--port {other}").',
            ) from None


class DataDirLock:
    """A ``flock`` on ``<data dir>/broker.lock`` while the broker runs on the embedded SQLite
    store: a second broker on the same data directory refuses to start. Replicas on one SQLite
    file on purpose each start with ``shared_data_dir`` and share the lock (a plain broker still
    refuses to join them). Brokers on one PostgreSQL database share a data directory's keys and
    take no lock. The kernel releases it when the process ends, however it ends."""

    def __init__(self, settings: Settings) -> None:
        self._path = settings.data_dir / "broker.lock"
        self._shared = settings.shared_data_dir
        self._fd: int | None = None

    def __enter__(self) -> DataDirLock:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self._shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise BrokerStartError(
                f"another broker (pid {holder}) is running on the data directory "
                f"{self._path.parent}",
                "Stop it first, or give this one a data directory of its own: "
                "valetkey serve --data-dir DIR (or VALETKEY_DATA_DIR). Replicas on one SQLite "
                "file on purpose: start each with --shared-data-dir (VALETKEY_SHARED_DATA_DIR=1).",
            ) from None
        if not self._shared:  # shared holders leave the first holder's pid for the message
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


async def _has_no_project(broker: Broker) -> bool:
    team = broker.bootstrap_result.team_id if broker.bootstrap_result else None
    if team is None:
        return False
    try:
        return not await ManagementRepository(broker.db, broker.keyring).projects(team)
    except Exception:  # the banner's hint only: the broker runs on whatever this says
        return False


def _announce(
    broker: Broker, settings: Settings, say: Callable[[str], None], *, first_project: bool = True
) -> None:
    store = (
        "PostgreSQL" if broker.db.is_postgres else f"SQLite ({settings.data_dir / 'valetkey.db'})"
    )
    say(f"Valetkey broker listening on {settings.issuer_url}  [store: {store}]")
    say(f"  data directory: {settings.data_dir}")
    first = broker.bootstrap_result is not None and broker.bootstrap_result.owner_token is not None
    if first:
        say("  First start: created the default team, keys and an owner credential.")
        say(
            f"  The owner credential is in {settings.cli_credentials_path} (mode 0600); the CLI on this"
        )
        say("  machine finds it on its own. Next:")
    elif first_project:
        say("  Next:")
    if first or first_project:
        say("    valetkey projects create my-agent")
        say('    valetkey connect create api-key --name search --data \'{"apiKey": "..."}\'')
        say("    valetkey connect attach api-key/search --project my-agent -e development")
        say("    valetkey link --project my-agent && valetkey env pull")
    say("  API docs: " + settings.issuer_url + "/docs")
