"""``valetkey projects …`` and ``valetkey environments …``."""

from __future__ import annotations

from typing import Annotated

import typer

from valetkey.cli.broker import seg
from valetkey.cli.output import Format, FormatOption, emit, emit_fields, field, when
from valetkey.cli.state import broker

__all__ = ["environments", "projects"]

projects = typer.Typer(no_args_is_help=True)
environments = typer.Typer(no_args_is_help=True)

_PROJECT_COLUMNS = [
    ("slug", field("slug")),
    ("name", field("name")),
    ("environments", field("environments")),
    ("id", field("id")),
    ("created", when("createdAt")),
]
ProjectOption = Annotated[str, typer.Option("--project", "-p", help="The project's slug.")]


@projects.command("create")
def create_project(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="Lowercase slug: a-z, 0-9 and '-'.")],
    name: Annotated[
        str | None, typer.Option("--name", help="A display name (default: the slug).")
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a project, with the development, preview and production environments."""
    body = {"slug": slug} if name is None else {"slug": slug, "name": name}
    emit_fields(broker(ctx).post("/v1/projects", body), fmt, title="project created")


@projects.command("list")
@projects.command("ls", hidden=True)
def list_projects(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """List the team's projects."""
    emit(
        broker(ctx).get("/v1/projects"),
        _PROJECT_COLUMNS,
        fmt,
        empty="no projects: valetkey projects create SLUG",
    )


@environments.command("create")
def create_environment(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="Lowercase slug, like staging.")],
    project: ProjectOption,
    fmt: FormatOption = Format.table,
) -> None:
    """Add a custom environment to a project."""
    result = broker(ctx).post(f"/v1/projects/{seg(project)}/environments", {"slug": slug})
    emit_fields(result, fmt, title="environment created")


@environments.command("list")
@environments.command("ls", hidden=True)
def list_environments(
    ctx: typer.Context, project: ProjectOption, fmt: FormatOption = Format.table
) -> None:
    """List a project's environments."""
    envs = broker(ctx).get(f"/v1/projects/{seg(project)}/environments")
    if fmt is Format.json:
        emit(envs, [], fmt)
        return
    emit([{"environment": e} for e in envs], [("environment", field("environment"))], fmt)
