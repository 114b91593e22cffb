"""``valetkey jobs …``: the broker's background jobs (webhook deliveries), dead letters first of all."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from valetkey.cli.broker import seg
from valetkey.cli.output import Format, FormatOption, emit, emit_fields, field, when
from valetkey.cli.state import broker

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)


class StatusChoice(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    dead = "dead"


_COLUMNS = [
    ("id", field("id")),
    ("kind", field("kind")),
    ("status", field("status")),
    ("attempts", field("attempts")),
    ("next attempt", when("runAt")),
    ("last error", field("lastError")),
    ("created", when("createdAt")),
]


@app.command("list")
@app.command("ls", hidden=True)
def list_jobs(
    ctx: typer.Context,
    status: Annotated[
        StatusChoice | None,
        typer.Option("--status", help="queued, running, done or dead (dead letters)."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1000, help="At most this many jobs.")
    ] = 100,
    fmt: FormatOption = Format.table,
) -> None:
    """List the team's background jobs, newest first (never their payloads)."""
    rows = broker(ctx).get("/v1/jobs", status=None if status is None else status.value, limit=limit)
    emit(rows, _COLUMNS, fmt, empty="no matching jobs")


@app.command("retry")
def retry(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(metavar="JOB_ID", help="A dead job's id.")],
    fmt: FormatOption = Format.table,
) -> None:
    """Queue a dead job again, with a fresh attempt budget (a webhook is redelivered)."""
    result = broker(ctx).post(f"/v1/jobs/{seg(job)}/retry", {})
    emit_fields(result, fmt, title="job queued again", fields=["id", "kind", "status", "runAt"])
