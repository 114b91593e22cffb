"""``valetkey tokens …``: broker access tokens, for workloads that have no OIDC token to present."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from valetkey.cli.broker import seg
from valetkey.cli.output import Format, FormatOption, emit, emit_fields, field, note, when
from valetkey.cli.state import broker

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

_COLUMNS = [
    ("id", field("id")),
    ("name", field("name")),
    ("project", field("project")),
    ("environment", field("environment")),
    ("user", field("userId")),
    ("expires", when("expiresAt")),
    ("revoked", when("revokedAt")),
]


@app.command("create")
def create(
    ctx: typer.Context,
    project: Annotated[
        str, typer.Option("--project", "-p", help="The project the token acts for.")
    ],
    environment: Annotated[
        str, typer.Option("--environment", "-e", help="The environment it acts in.")
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="A label (default PROJECT-ENVIRONMENT).")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Bind it to one user: it may request only that user's tokens."),
    ] = None,
    expires_in: Annotated[
        int | None, typer.Option("--expires-in", help="Lifetime in seconds (default: no expiry).")
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create an access token. It is shown once: store it now (VALETKEY_TOKEN for the workload)."""
    body: dict[str, Any] = {"environment": environment}
    if name is not None:
        body["name"] = name
    if user is not None:
        body["userId"] = user
    if expires_in is not None:
        body["expiresInSeconds"] = expires_in
    result = broker(ctx).post(f"/v1/projects/{seg(project)}/access-tokens", body)
    emit_fields(
        result,
        fmt,
        title="access token created",
        fields=["id", "name", "project", "environment", "userId", "expiresAt", "token"],
    )
    note("This token will not be shown again: store it now (the broker keeps only its hash).")


@app.command("list")
@app.command("ls", hidden=True)
def list_tokens(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only this project's tokens.")
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List access tokens (never the tokens themselves)."""
    emit(
        broker(ctx).get("/v1/access-tokens", project=project),
        _COLUMNS,
        fmt,
        empty="no access tokens",
    )


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID")],
    fmt: FormatOption = Format.table,
) -> None:
    """Revoke an access token at once (every broker replica stops accepting it)."""
    emit_fields(
        broker(ctx).request("DELETE", f"/v1/access-tokens/{seg(token_id)}"), fmt, title="revoked"
    )
