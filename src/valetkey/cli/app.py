"""The root ``valetkey`` command: global options; refusals become ``error[code]``, exit 1."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from valetkey.cli.commands import (
    audit,
    connect,
    jobs,
    keys,
    members,
    projects,
    serve,
    tokens,
    trust,
    workdir,
)
from valetkey.cli.output import report_error
from valetkey.cli.state import state
from valetkey.errors import ValetkeyError

__all__ = ["app"]


class _Root(TyperGroup):
    """Every ValetkeyError raised by a command becomes ``error[code]: message`` and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ValetkeyError as err:
            report_error(err)
            raise typer.Exit(1) from None


def _version() -> str:
    try:
        return version("valetkey")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"valetkey {_version()}")
        raise typer.Exit()


app = typer.Typer(
    cls=_Root,
    name="valetkey",
    help="Valetkey: a self-hostable runtime credential broker for agents and apps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="The broker's data directory, where `serve` leaves cli.json "
            "(default: VALETKEY_DATA_DIR, else ~/.local/share/valetkey).",
            show_default=False,
        ),
    ] = None,
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Manage a Valetkey broker: projects, connectors, trust, tokens, audit."""
    state(ctx).data_dir = data_dir


serve.register(app)
workdir.register(app)
audit.register(app)
app.add_typer(projects.projects, name="projects", help="Projects (one per application).")
app.add_typer(projects.environments, name="environments", help="A project's environments.")
app.add_typer(
    connect.app, name="connect", help="Connectors: create, attach to projects, get tokens."
)
app.add_typer(
    trust.app, name="trust", help="Trust bindings: which external OIDC tokens map to a project."
)
app.add_typer(tokens.app, name="tokens", help="Broker access tokens for workloads without OIDC.")
app.add_typer(members.app, name="members", help="Team members and their credentials.")
app.add_typer(keys.app, name="keys", help="The key-encryption keys protecting secrets at rest.")
app.add_typer(jobs.app, name="jobs", help="Background jobs (webhook deliveries) and dead letters.")
