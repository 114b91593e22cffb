"""``valetkey link`` and ``valetkey env pull``: tie a working directory to a project, and write a
``.env`` holding a development identity (development environment only) and the broker's URL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from valetkey.cli.broker import seg
from valetkey.cli.dotenv import merge_dotenv, write_private
from valetkey.cli.errors import CliError, ProjectNotLinked
from valetkey.cli.output import Format, FormatOption, emit_fields, note, say
from valetkey.cli.state import broker

__all__ = ["find_link", "register"]

LINK_DIR = ".valetkey"
LINK_FILE = "project.json"

env_app = typer.Typer(no_args_is_help=True, help="The local .env with a development identity.")


def find_link(start: Path | None = None) -> tuple[Path, dict[str, str]]:
    """The nearest ``.valetkey/project.json`` at or above ``start`` (default: cwd), and its data."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        path = folder / LINK_DIR / LINK_FILE
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ProjectNotLinked(
                    f"{path} is not readable JSON", hint="Run `valetkey link --project P` again."
                ) from exc
            if not isinstance(data, dict) or not isinstance(data.get("project"), str):
                raise ProjectNotLinked(
                    f"{path} names no project", hint="Run `valetkey link --project P` again."
                )
            return path, {k: str(v) for k, v in data.items()}
    raise ProjectNotLinked(
        f"{here} is not linked to a Valetkey project",
        hint="Run `valetkey link --project P` in this directory.",
    )


def _gitignore_advice(folder: Path, names: list[str]) -> None:
    ignore = folder / ".gitignore"
    try:
        lines = {
            line.strip().rstrip("/").lstrip("/")
            for line in ignore.read_text(encoding="utf-8").splitlines()
        }
    except (OSError, UnicodeDecodeError):
        return
    missing = [n for n in names if n.rstrip("/") not in lines]
    if missing:
        note(
            f"hint: {ignore} does not ignore {', '.join(missing)}; "
            "add it so the identity is never committed."
        )


def link(
    ctx: typer.Context,
    project: Annotated[
        str, typer.Option("--project", "-p", help="The project this directory belongs to.")
    ],
    fmt: FormatOption = Format.table,
) -> None:
    """Link the current directory to a project (writes .valetkey/project.json)."""
    client = broker(ctx)
    found = client.get(f"/v1/projects/{seg(project)}")
    folder = Path.cwd() / LINK_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    data = {"url": client.url, "project": found["slug"]}
    (folder / LINK_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    emit_fields({**data, "file": str(folder / LINK_FILE)}, fmt, title="linked")
    if fmt is Format.table:
        note("Next: valetkey env pull")
    _gitignore_advice(Path.cwd(), [".valetkey/"])


@env_app.command("pull")
def pull(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Option("--file", help="The .env file to write or merge into.")
    ] = Path(".env"),
    ttl: Annotated[
        int,
        typer.Option(
            "--ttl", min=300, max=86400, help="Lifetime of the development identity, in seconds."
        ),
    ] = 8 * 3600,
    fmt: FormatOption = Format.table,
) -> None:
    """Write VALETKEY_URL and a development identity (VALETKEY_TOKEN) into .env; keep the rest."""
    link_path, linked = find_link()
    client = broker(ctx)
    if linked.get("url") and linked["url"].rstrip("/") != client.url:
        raise CliError(
            f"{link_path} links to the broker at {linked['url']}, "
            f"but the CLI's credentials are for {client.url}",
            hint="Set VALETKEY_URL / VALETKEY_API_TOKEN for that broker, "
            "or run `valetkey link` again.",
        )
    answer: dict[str, Any] = client.post(
        f"/v1/projects/{seg(linked['project'])}/development-identity", {"ttlSeconds": ttl}
    )
    values = {
        "VALETKEY_URL": str(answer.get("url") or client.url),
        "VALETKEY_TOKEN": str(answer["token"]),
        "VALETKEY_PROJECT": str(answer.get("project") or linked["project"]),
        "VALETKEY_ENVIRONMENT": str(answer.get("environment") or "development"),
    }
    target = file if file.is_absolute() else Path.cwd() / file
    try:
        existing = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        existing = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {target} ({type(exc).__name__})", field="file") from exc
    try:
        write_private(target, merge_dotenv(existing, values))
    except OSError as exc:
        raise CliError(f"cannot write {target} ({exc.strerror})", field="file") from exc
    expires = datetime.fromisoformat(str(answer["expiresAt"])).astimezone(UTC)
    summary = {
        "file": str(target),
        "project": values["VALETKEY_PROJECT"],
        "environment": values["VALETKEY_ENVIRONMENT"],
        "url": values["VALETKEY_URL"],
        "expiresAt": expires.isoformat(),
        "keys": sorted(values),
    }
    if fmt is Format.json:
        emit_fields(summary, fmt)
    else:
        hours = ttl / 3600
        say(f"Wrote {', '.join(values)} to {target}")
        say(
            f"Development identity for project {values['VALETKEY_PROJECT']} (development only), "
            f"expires {expires:%Y-%m-%d %H:%M} UTC (in {hours:g} h); "
            "run `valetkey env pull` again then."
        )
    _gitignore_advice(target.parent, [target.name])


def register(app: typer.Typer) -> None:
    app.command("link")(link)
    app.add_typer(env_app, name="env")
