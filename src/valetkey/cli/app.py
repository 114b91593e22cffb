"""The root ``valetkey`` command: global options; refusals become ``error[code]``, exit 1."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # Typer ≥ 0.2x carries its own copy of click; older ones use click itself.
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click.exceptions import UsageError as ClickUsageError  # type: ignore[assignment]

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
from valetkey.cli.errors import UsageError
from valetkey.cli.output import Format, report_error
from valetkey.cli.state import state
from valetkey.errors import ValetkeyError

__all__ = ["app"]

_JSON_ERRORS = "valetkey.json_errors"


def _asks_json(args: Sequence[str]) -> bool:
    """Whether the command line asks for ``--format json`` (so refusals are JSON too)."""
    for i, arg in enumerate(args):
        if arg == "--":
            return False
        if arg == "--format=json" or (arg == "--format" and args[i + 1 : i + 2] == ["json"]):
            return True
    return False


def _quiet_flags(command: Any, ctx: Any) -> None:
    """Flags take no value: show no ``<bool>`` type next to them in ``--help``."""
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        help_option.metavar = ""
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            _quiet_flags(sub, ctx)


class _Root(TyperGroup):
    """Every ValetkeyError raised by a command becomes ``error[code]: message`` and exit code 1;
    with ``--format json``, a JSON object on stderr (usage errors too, exit 2)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta[_JSON_ERRORS] = _asks_json(args)
        _quiet_flags(self, ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        fmt = Format.json if ctx.meta.get(_JSON_ERRORS) else Format.table
        try:
            return super().invoke(ctx)
        except ValetkeyError as err:
            report_error(err, fmt)
            raise typer.Exit(1) from None
        except ClickUsageError as err:
            if fmt is not Format.json:
                raise
            where = err.ctx.command_path if err.ctx is not None else "valetkey"
            report_error(
                UsageError(err.format_message(), hint=f"See `{where} --help`."), fmt
            )
            raise typer.Exit(2) from None


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
