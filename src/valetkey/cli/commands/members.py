"""``valetkey members …``: team members and their credentials."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from valetkey.cli.output import Format, FormatOption, emit, emit_fields, field, note, when
from valetkey.cli.state import broker

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)


class RoleChoice(enum.StrEnum):
    owner = "owner"
    member = "member"
    viewer = "viewer"


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Lowercase slug: a-z, 0-9 and '-'.")],
    role: Annotated[
        RoleChoice, typer.Option("--role", help="owner, member or viewer (read-only).")
    ] = RoleChoice.member,
    fmt: FormatOption = Format.table,
) -> None:
    """Add a member (owners only); the credential is shown once, to use as VALETKEY_API_TOKEN."""
    result = broker(ctx).post("/v1/members", {"name": name, "role": role.value})
    emit_fields(result, fmt, title="member created", fields=["id", "name", "role", "credential"])
    note(
        "The credential will not be shown again. "
        "The member sets VALETKEY_URL and VALETKEY_API_TOKEN to use it."
    )


@app.command("list")
def list_members(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """List the team's members."""
    columns = [
        ("name", field("name")),
        ("role", field("role")),
        ("id", field("id")),
        ("created", when("createdAt")),
    ]
    emit(broker(ctx).get("/v1/members"), columns, fmt)
