"""``valetkey keys rotate``: runs where the key file lives, not over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from valetkey.cli.output import Format, FormatOption, emit_fields, note
from valetkey.cli.state import state

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="The broker's data directory (key file).")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url", help="The broker's database (default: SQLite in the data directory)."
        ),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Make a new key-encryption key active, re-wrap every secret, retire unused old keys.

    Safe while brokers run on the same key file and database.
    """
    from valetkey.cli.local import rotate_keys
    from valetkey.server.settings import Settings

    settings = Settings.from_env(
        data_dir=data_dir or state(ctx).data_dir, database_url=database_url
    )
    report = asyncio.run(rotate_keys(settings, progress=note))
    emit_fields(report.to_json(), fmt, title="key-encryption key rotated")
