"""``valetkey trust …``: trust bindings from external OIDC issuers to a project's environment."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from valetkey.cli.broker import seg
from valetkey.cli.output import Format, FormatOption, emit, emit_fields, field
from valetkey.cli.parsing import parse_claims, parse_list
from valetkey.cli.state import broker

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

_COLUMNS = [
    ("id", field("id")),
    ("project", field("project")),
    ("environment", field("environment")),
    ("issuer", field("issuer")),
    ("audience", field("audience")),
    ("claims", field("claims")),
    ("algorithms", field("algorithms")),
    # false: another team owns this (issuer, audience); the binding is never selected
    ("active", field("active")),
]


@app.command("create")
def create(
    ctx: typer.Context,
    project: Annotated[str, typer.Option("--project", "-p", help="The project the tokens map to.")],
    environment: Annotated[
        str, typer.Option("--environment", "-e", help="The environment they map to.")
    ],
    issuer: Annotated[
        str, typer.Option("--issuer", help="The issuer URL, exactly as in the tokens' iss.")
    ],
    audience: Annotated[
        str,
        typer.Option(
            "--audience",
            help="The audience the tokens must carry; it decides the team. On a broker several "
            "teams share, use valetkey:<team-slug> (reserved to that team).",
        ),
    ],
    claims: Annotated[
        list[str] | None,
        typer.Option(
            "--claim",
            help="A claim condition name=value (repeatable; * and ? are wildcards). "
            "At least one is required.",
        ),
    ] = None,
    algorithms: Annotated[
        list[str] | None,
        typer.Option("--algorithm", help="Allowed signing algorithms (default RS256, ES256)."),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Trust tokens from ISSUER for AUDIENCE whose claims match every --claim."""
    body: dict[str, Any] = {
        "environment": environment,
        "issuer": issuer,
        "audience": audience,
        "claims": parse_claims(claims),
    }
    if algorithms:
        body["algorithms"] = parse_list(algorithms)
    result = broker(ctx).post(f"/v1/projects/{seg(project)}/trust-bindings", body)
    emit_fields(result, fmt, title="trust binding created")


@app.command("list")
@app.command("ls", hidden=True)
def list_bindings(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only this project's bindings.")
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List trust bindings."""
    emit(
        broker(ctx).get("/v1/trust-bindings", project=project),
        _COLUMNS,
        fmt,
        empty="no trust bindings",
    )


@app.command("delete")
@app.command("rm", hidden=True)
def delete(
    ctx: typer.Context,
    binding_id: Annotated[str, typer.Argument(metavar="ID")],
    fmt: FormatOption = Format.table,
) -> None:
    """Delete a trust binding: tokens it admitted are refused from now on."""
    emit_fields(
        broker(ctx).request("DELETE", f"/v1/trust-bindings/{seg(binding_id)}"), fmt, title="deleted"
    )


# `add` is what the broker's untrusted_issuer remedy says; keep it working, unlisted.
app.command("add", hidden=True)(create)
