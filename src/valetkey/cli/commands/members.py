"""``valetkey members …``: team members and their credentials."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from valetkey.cli.broker import seg, write_cli_file
from valetkey.cli.output import Format, FormatOption, emit, emit_fields, field, note, when
from valetkey.cli.state import broker
from valetkey.errors import NotFound

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
    expires_in: Annotated[
        int | None,
        typer.Option(
            "--expires-in", help="The credential's lifetime in seconds (default: no expiry)."
        ),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Add a member (owners only); the credential is shown once, to use as VALETKEY_API_TOKEN."""
    body: dict[str, Any] = {"name": name, "role": role.value}
    if expires_in is not None:
        body["expiresInSeconds"] = expires_in
    result = broker(ctx).post("/v1/members", body)
    emit_fields(
        result,
        fmt,
        title="member created",
        fields=["id", "name", "role", "expiresAt", "credential"],
    )
    note(
        "The credential will not be shown again. "
        "The member sets VALETKEY_URL and VALETKEY_API_TOKEN to use it."
    )


@app.command("list")
@app.command("ls", hidden=True)
def list_members(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """List the team's members."""
    columns = [
        ("name", field("name")),
        ("role", field("role")),
        ("id", field("id")),
        ("created", when("createdAt")),
        ("last used", when("lastUsedAt")),
        ("expires", when("expiresAt")),
    ]
    emit(broker(ctx).get("/v1/members"), columns, fmt)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    member: Annotated[str, typer.Argument(metavar="NAME_OR_ID", help="The member's name or id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Revoke a member and all its credentials, at once (owners only; never the last owner)."""
    client = broker(ctx)
    members = client.get("/v1/members")
    found = [m for m in members if member in (m.get("id"), m.get("name"))]
    if not found:
        raise NotFound(f"no member {member}", member=member)
    target = found[0]
    if not yes:
        typer.confirm(
            f"Revoke member {target['name']} ({target['role']}, {target['id']}) and every "
            "credential it holds?",
            abort=True,
            err=True,
        )
    result = client.request("DELETE", f"/v1/members/{seg(target['id'])}")
    emit_fields(result, fmt, title="member revoked")


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    expires_in: Annotated[
        int | None,
        typer.Option(
            "--expires-in",
            help="The new credential's lifetime in seconds (default: the old one's lifetime).",
        ),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Replace the credential this command uses: the old one stops working at once.

    When the credential came from the data directory's cli.json, the new one is written
    there (mode 0600) and not printed; otherwise it is shown once, to store as
    VALETKEY_API_TOKEN.
    """
    client = broker(ctx)
    body: dict[str, Any] = {}
    if expires_in is not None:
        body["expiresInSeconds"] = expires_in
    result = client.post("/v1/me/credential", body)
    source = client.credentials.source
    if source != "VALETKEY_API_TOKEN":
        path = Path(source)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        kept = {k: str(v) for k, v in saved.items()} if isinstance(saved, dict) else {}
        write_cli_file(
            path, {**kept, "url": kept.get("url", client.url), "token": result["credential"]}
        )
        shown = {k: v for k, v in result.items() if k != "credential"}
        emit_fields(
            shown, fmt, title="credential rotated", fields=["id", "name", "role", "expiresAt"]
        )
        note(f"The new credential is in {source}; the old one no longer works.")
        return
    emit_fields(
        result,
        fmt,
        title="credential rotated",
        fields=["id", "name", "role", "expiresAt", "credential"],
    )
    note(
        "The old credential no longer works. Store this one as VALETKEY_API_TOKEN now: "
        "it will not be shown again."
    )
