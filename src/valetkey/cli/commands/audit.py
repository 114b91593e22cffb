"""``valetkey audit`` and ``valetkey usage``."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from valetkey.cli.output import Format, FormatOption, emit, emit_fields, field, when
from valetkey.cli.parsing import parse_when
from valetkey.cli.state import broker
from valetkey.core.clock import SystemClock

__all__ = ["register"]


class DecisionChoice(enum.StrEnum):
    allowed = "allowed"
    denied = "denied"


_COLUMNS = [
    ("at", when("at")),
    ("actor", field("actor")),
    ("action", field("action")),
    ("decision", field("decision")),
    ("reason", field("reason")),
    ("connector", field("connector")),
    ("project", field("project")),
    ("env", field("environment")),
    ("subject", field("subject")),
]


def audit(
    ctx: typer.Context,
    connector: Annotated[
        str | None, typer.Option("--connector", help="Only this connector uid.")
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only this project.")
    ] = None,
    decision: Annotated[
        DecisionChoice | None, typer.Option("--decision", help="allowed or denied.")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action, like token.exchange.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO time, or a span back: 30m, 1h, 2d, 1w.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="ISO time, or a span back: 30m, 1h, 2d, 1w.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1000, help="At most this many events.")
    ] = 100,
    fmt: FormatOption = Format.table,
) -> None:
    """Show audit events, newest first: every decision, allowed or denied, with its reason."""
    now = SystemClock().now()
    start = parse_when(since, now, "--since")
    end = parse_when(until, now, "--until")
    rows = broker(ctx).get(
        "/v1/audit",
        connector=connector,
        project=project,
        decision=None if decision is None else decision.value,
        action=action,
        since=None if start is None else start.isoformat(),
        until=None if end is None else end.isoformat(),
        limit=limit,
    )
    emit(rows, _COLUMNS, fmt, empty="no matching audit events")


def usage(
    ctx: typer.Context,
    month: Annotated[
        str | None, typer.Option("--month", help="YYYY-MM (default: this month).")
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Show this month's (or --month's) usage counters."""
    result = broker(ctx).get("/v1/usage", month=month)
    if fmt is Format.json:
        emit_fields(result, fmt)
        return
    counters = result.get("counters") or {}
    emit_fields(
        {name: counters[name] for name in sorted(counters)} or {"(no usage)": ""},
        fmt,
        title=f"usage {result.get('month', '')}",
    )


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
    app.command("usage")(usage)
