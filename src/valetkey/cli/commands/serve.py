"""``valetkey serve``: run the broker in the foreground."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from valetkey.cli.errors import CliError
from valetkey.cli.state import state

__all__ = ["register"]

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def serve(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data directory (keys, SQLite file, cli.json)."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="postgresql://… or sqlite:///path (default: SQLite in the data directory).",
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Listen address (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="Listen port (default 8787).")
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option("--public-url", help="The URL apps reach the broker at; also the issuer."),
    ] = None,
    allow_private_networks: Annotated[
        bool | None,
        typer.Option(
            "--allow-private-networks",
            help="Allow issuers and provider URLs on private or loopback addresses "
            "(off by default).",
            show_default=False,
        ),
    ] = None,
    shared_data_dir: Annotated[
        bool | None,
        typer.Option(
            "--shared-data-dir",
            help="Run as one of several brokers on this data directory's SQLite file "
            "(each must be started with it; off by default).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="critical, error, warning, info or debug.")
    ] = "info",
) -> None:
    """Run the broker (SQLite in the data directory unless --database-url says otherwise)."""
    from valetkey.cli.local import check_database
    from valetkey.server.run import BrokerStartError
    from valetkey.server.run import serve as run_broker
    from valetkey.server.settings import Settings

    level = log_level.lower()
    if level not in _LOG_LEVELS:
        raise typer.BadParameter(f"use one of {', '.join(_LOG_LEVELS)}", param_hint="--log-level")
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        raise CliError("--public-url must start with http:// or https://", field="public_url")
    settings = Settings.from_env(
        data_dir=data_dir or state(ctx).data_dir,
        database_url=database_url,
        host=host,
        port=port,
        public_url=public_url,
        allow_private_networks=allow_private_networks or None,
        shared_data_dir=shared_data_dir or None,
    )
    asyncio.run(check_database(settings))
    try:
        run_broker(settings, log_level=level)
    except BrokerStartError as exc:
        raise CliError(exc.message, hint=exc.hint) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
