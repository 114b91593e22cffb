"""``valetkey serve``: run the broker under uvicorn and tell a newcomer what to do next."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

import uvicorn

from valetkey.server.app import create_app
from valetkey.server.broker import Broker
from valetkey.server.settings import Settings


def serve(
    settings: Settings,
    *,
    log_level: str = "info",
    echo: Callable[[str], None] | None = None,
    loop: str = "auto",
    http: str = "auto",
) -> None:
    """Start the broker and block until it is stopped (SIGINT/SIGTERM).

    ``loop`` and ``http`` are uvicorn's: ``auto`` takes ``uvloop`` and ``httptools`` when they are
    installed (the ``server`` extra installs both where they build), else the stdlib loop and
    ``h11``; the benchmark passes ``asyncio``/``h11`` to measure the difference.
    """
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
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
        _announce(broker, settings, say)
        await task

    asyncio.run(main())


def _announce(broker: Broker, settings: Settings, say: Callable[[str], None]) -> None:
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
    else:
        say("  Next:")
    say("    valetkey projects create my-agent")
    say('    valetkey connect create api-key --name search --data \'{"apiKey": "..."}\'')
    say("    valetkey connect attach api-key/search --project my-agent -e development")
    say("    valetkey link --project my-agent && valetkey env pull")
    say("  API docs: " + settings.issuer_url + "/docs")
