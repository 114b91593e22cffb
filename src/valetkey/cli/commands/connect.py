"""``valetkey connect …``: connectors, their links to projects, tokens and revocation."""

from __future__ import annotations

import enum
import sys
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from valetkey.cli.broker import BrokerClient, seg, uid_path
from valetkey.cli.commands import consent
from valetkey.cli.commands.workdir import find_link
from valetkey.cli.errors import CredentialsNotFound, ProjectNotLinked
from valetkey.cli.output import Format, FormatOption, emit, emit_fields, field, note, short_time
from valetkey.cli.parsing import parse_data, parse_list
from valetkey.cli.prompts import confirm, prompt_secrets
from valetkey.cli.state import broker
from valetkey.core.models import is_connector_id
from valetkey.core.providers import ConfigField
from valetkey.errors import IdentityNotFound
from valetkey.providers.registry import ProviderRegistry

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

UidArg = Annotated[
    str,
    typer.Argument(
        help="The connector's uid, service/name (like api-key/search), or its id (con_…)."
    ),
]
DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        help="Configuration as inline JSON, @path to a JSON file, or @- for stdin "
        "(keeps secrets out of shell history).",
    ),
]
ProjectOption = Annotated[
    str | None,
    typer.Option(
        "--project", "-p", help="The project's slug (default: the one `valetkey link` set here)."
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]

_PROVIDERS = ProviderRegistry.load()


def _data_fields_help() -> str:
    """The --data fields of every installed connector type, from each provider's declaration."""
    parts = ["The --data fields of each connector type (* required, secret: stored encrypted):"]
    for kind in _PROVIDERS.types():
        lines = [f"{kind}:"]
        for spec in _PROVIDERS.get(kind).config_fields:
            marks = [m for m, on in (("*", spec.required is True), ("secret", spec.sensitive)) if on]
            label = f"{spec.name} ({' '.join(marks)})" if marks else spec.name
            lines.append(f"  {label}: {spec.help}")
        parts.append("\b\n" + "\n".join(lines))
    return "\n\n".join(parts)


_DATA_FIELDS_HELP = _data_fields_help()


def _fields_for(service: str, type_: str | None) -> tuple[ConfigField, ...]:
    """The fields of the type a new connector gets (none when no installed provider knows it)."""
    kind = type_ or _PROVIDERS.type_for_service(service)
    if kind is None or kind not in _PROVIDERS:
        return ()
    return _PROVIDERS.get(kind).config_fields


def _project(project: str | None) -> str:
    """``--project``, else the project this directory is linked to."""
    if project is not None:
        return project
    try:
        return find_link()[1]["project"]
    except ProjectNotLinked as err:
        raise ProjectNotLinked(
            f"no --project given, and {err.message}",
            hint="Pass --project SLUG, or run `valetkey link --project SLUG` in this directory.",
        ) from None


def _uid(client: BrokerClient, value: str) -> str:
    """A connector's uid, when it was named by its id (``con_…``)."""
    if not is_connector_id(value):
        return value
    uid: str = client.get(f"/v1/connectors/{uid_path(value)}")["uid"]
    return uid


def _links(row: Mapping[str, Any]) -> str:
    return "; ".join(
        f"{link['project']} ({', '.join(link['environments'])})" for link in row.get("links") or []
    )


_COLUMNS = [
    ("uid", field("uid")),
    ("type", field("type")),
    ("attached to", _links),
    ("id", field("id")),
]
_FIELDS = [
    "uid",
    "id",
    "type",
    "service",
    "name",
    "data",
    "secretFields",
    "capabilities",
    "links",
    "createdAt",
    "updatedAt",
]


def _show(row: Mapping[str, Any], fmt: Format, title: str) -> None:
    if fmt is Format.json:
        emit_fields(row, fmt)
        return
    display = dict(row)
    display["links"] = _links(row) or "(not attached)"
    for name in ("createdAt", "updatedAt"):
        display[name] = short_time(row.get(name))
    emit_fields(display, fmt, title=title, fields=_FIELDS)


@app.command("create", epilog=_DATA_FIELDS_HELP)
def create(
    ctx: typer.Context,
    service: Annotated[
        str, typer.Argument(help="The service, like api-key, github, slack or a domain.")
    ],
    name: Annotated[
        str, typer.Option("--name", help="The connector's name: its uid is SERVICE/NAME.")
    ],
    data: DataOption = "{}",
    type_: Annotated[
        str | None,
        typer.Option("--type", help="The provider type, when the service does not imply one."),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a connector. Secret fields in --data are stored encrypted and never shown again.

    Secret fields left out of --data are asked for with hidden input when stdin is a terminal;
    or pass --data @- and the JSON on stdin, or --data @FILE."""
    given = parse_data(data)
    config = dict(given)
    prompt_secrets(_fields_for(service, type_), config, given)
    body: dict[str, Any] = {"service": service, "name": name, "data": config}
    if type_ is not None:
        body["type"] = type_
    _show(broker(ctx).post("/v1/connectors", body), fmt, "connector created")


@app.command("list")
@app.command("ls", hidden=True)
def list_connectors(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Option("--service", help="Only this service.")] = None,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only those attached to it.")
    ] = None,
    search: Annotated[str | None, typer.Option("--search", help="Text in the uid or type.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List connectors."""
    rows = broker(ctx).get("/v1/connectors", service=service, project=project, search=search)
    emit(rows, _COLUMNS, fmt, empty="no connectors: valetkey connect create SERVICE --name NAME")


@app.command("show")
def show(ctx: typer.Context, uid: UidArg, fmt: FormatOption = Format.table) -> None:
    """Show a connector: its non-secret configuration, capabilities and links."""
    _show(broker(ctx).get(f"/v1/connectors/{uid_path(uid)}"), fmt, uid)


@app.command("update", epilog=_DATA_FIELDS_HELP)
def update(
    ctx: typer.Context,
    uid: UidArg,
    data: DataOption,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace the whole configuration with --data (fields left out are dropped; "
            "secret fields left out keep their stored value).",
        ),
    ] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Change a connector's configuration: --data is merged in (--replace: replaces it).

    A field set to null in --data is removed. Secret fields left out keep their stored value."""
    given = parse_data(data)
    client = broker(ctx)
    path = f"/v1/connectors/{uid_path(uid)}"
    before = client.get(path)
    stored: dict[str, Any] = dict(before.get("data") or {})
    secrets_before = set(before.get("secretFields") or [])
    if replace:
        config = given
    else:
        # null removes a field; a secret sent as null is cleared by the provider.
        merged = {**stored, **given}
        config = {k: v for k, v in merged.items() if v is not None or k in secrets_before}
    row = client.request("PATCH", path, body={"data": config})
    _show(row, fmt, "connector updated")
    if fmt is Format.table:
        note(_what_changed(stored, secrets_before, given, row))


def _what_changed(
    stored: Mapping[str, Any],
    secrets_before: set[str],
    given: Mapping[str, Any],
    after: Mapping[str, Any],
) -> str:
    """``changed: a, b; removed: c``, from the configuration before and after (secret values
    are never seen: a secret given counts as changed)."""
    data = after.get("data") or {}
    secrets_after = set(after.get("secretFields") or [])
    changed = {k for k in data if stored.get(k) != data[k]}
    changed |= {k for k, v in given.items() if v is not None and k in secrets_after}
    removed = {k for k in stored if k not in data} | (secrets_before - secrets_after)
    text = f"changed: {', '.join(sorted(changed)) or 'nothing'}"
    return text + (f"; removed: {', '.join(sorted(removed))}" if removed else "")


@app.command("remove")
@app.command("rm", hidden=True)
def remove(
    ctx: typer.Context,
    uid: UidArg,
    disconnect_all: Annotated[
        bool,
        typer.Option(
            "--disconnect-all", help="Also detach it from every project it is attached to."
        ),
    ] = False,
    yes: YesOption = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Remove a connector (refused while attached, unless --disconnect-all); asks first."""
    uid_path(uid)
    also = " and detach it from every project" if disconnect_all else ""
    confirm(yes, f"Remove connector {uid}{also}? Its tokens stop being served.")
    params = {"disconnectAll": "true"} if disconnect_all else None
    result = broker(ctx).request("DELETE", f"/v1/connectors/{uid_path(uid)}", params=params)
    emit_fields(result, fmt, title="connector removed")


@app.command("attach")
def attach(
    ctx: typer.Context,
    uid: UidArg,
    project: ProjectOption = None,
    *,
    environments: Annotated[
        list[str],
        typer.Option(
            "--environment",
            "--environments",
            "-e",
            help="Environments, comma-separated or repeated.",
        ),
    ],
    subjects: Annotated[
        list[str] | None,
        typer.Option("--subjects", help="Subject types allowed (default app): app,user."),
    ] = None,
    scopes: Annotated[
        list[str] | None, typer.Option("--scopes", help="The scope ceiling, comma-separated.")
    ] = None,
    max_lifetime: Annotated[
        int | None, typer.Option("--max-lifetime", help="The longest token lifetime, in seconds.")
    ] = None,
    confirm_consent: Annotated[
        bool,
        typer.Option(
            "--confirm-consent/--no-confirm-consent",
            help="Browser consent waits for the app's confirm call (default). Turn off only for "
            "apps that cannot confirm, e.g. written for Vercel Connect: see docs/security.md.",
        ),
    ] = True,
    user_issuers: Annotated[
        list[str] | None,
        typer.Option(
            "--user-issuers",
            help="Issuers whose users may be named (subject.issuer), comma-separated. "
            "Default: none, only users named without an issuer.",
        ),
    ] = None,
    resources: Annotated[
        list[str] | None,
        typer.Option(
            "--resources",
            help="RFC 8707 resources a request may name, comma-separated. Default: none.",
        ),
    ] = None,
    audiences: Annotated[
        list[str] | None,
        typer.Option(
            "--audiences", help="Audiences a request may name, comma-separated. Default: none."
        ),
    ] = None,
    allow_unknown_scope: Annotated[
        bool,
        typer.Option(
            "--allow-unknown-scope/--no-allow-unknown-scope",
            help="Serve tokens whose granted scopes the provider does not state (off by "
            "default; such tokens say so in their metadata).",
        ),
    ] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Attach a connector to a project's environments, with a policy (re-attaching replaces it)."""
    body: dict[str, Any] = {"project": _project(project), "environments": parse_list(environments)}
    if subjects is not None:
        body["subjects"] = parse_list(subjects)
    if scopes is not None:
        body["scopes"] = parse_list(scopes)
    if max_lifetime is not None:
        body["maxLifetimeSeconds"] = max_lifetime
    if not confirm_consent:
        body["confirmConsent"] = False
    for name, values in (
        ("userIssuers", user_issuers),
        ("resources", resources),
        ("audiences", audiences),
    ):
        if values is not None:
            body[name] = parse_list(values)
    if allow_unknown_scope:
        body["allowUnknownScope"] = True
    emit_fields(
        broker(ctx).post(f"/v1/connectors/{uid_path(uid)}/links", body), fmt, title="attached"
    )


@app.command("detach")
def detach(
    ctx: typer.Context,
    uid: UidArg,
    project: ProjectOption = None,
    environments: Annotated[
        list[str] | None,
        typer.Option(
            "--environment", "--environments", "-e", help="Only these environments (default: all)."
        ),
    ] = None,
    yes: YesOption = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Detach a connector from a project (or from some of its environments); asks first."""
    uid_path(uid)
    slug = _project(project)
    body: dict[str, Any] = {"project": slug}
    envs = parse_list(environments)
    if envs is not None:
        body["environments"] = envs
    where = f"{slug} ({', '.join(envs)})" if envs else slug
    confirm(yes, f"Detach {uid} from {where}? Its workloads there stop getting tokens.")
    emit_fields(
        broker(ctx).post(f"/v1/connectors/{uid_path(uid)}/detach", body), fmt, title="detached"
    )


class SubjectChoice(enum.StrEnum):
    app = "app"
    user = "user"


def _user(subject: SubjectChoice | None, user: str | None) -> str | None:
    """The user the subject names, or None for the app subject."""
    if subject is SubjectChoice.user and not user:
        raise typer.BadParameter("--subject user needs --user ID", param_hint="--subject")
    if subject is SubjectChoice.app and user:
        raise typer.BadParameter(
            "--user names a user subject; drop --subject app", param_hint="--user"
        )
    return user or None


@app.command("token")
def token(
    ctx: typer.Context,
    uid: UidArg,
    subject: Annotated[
        SubjectChoice | None, typer.Option("--subject", help="app (default) or user.")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="The user the token acts for.")] = None,
    scopes: Annotated[
        list[str] | None, typer.Option("--scopes", help="Narrow to these scopes, comma-separated.")
    ] = None,
    no_newline: Annotated[
        bool, typer.Option("--no-newline", "-n", help="Do not end the output with a newline.")
    ] = False,
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format",
            help="table or json: the token with its expiry and connector (default: the token "
            "alone).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print a provider token (and nothing else) for shell use.

    The workload identity is found the way the SDK finds it
    (VALETKEY_TOKEN, VALETKEY_OIDC_TOKEN, …, or the .env written by `valetkey env pull`).
    Without one, in a directory `valetkey link` tied to a project, a short development
    identity for that project is asked for with the member credential."""
    from valetkey.sdk.client import Client

    user_id = _user(subject, user)
    uid = _workload_uid(ctx, uid)
    try:
        with Client() as client:
            answer = client.get_token_response(
                uid, user=user_id, scopes=parse_list(scopes), no_cache=True
            )
    except IdentityNotFound:
        linked = _linked_identity(ctx)
        if linked is None:
            raise
        with Client(base_url=linked[0], identity=linked[1]) as client:
            answer = client.get_token_response(
                uid, user=user_id, scopes=parse_list(scopes), no_cache=True
            )
    if fmt is None:
        sys.stdout.write(answer.token if no_newline else answer.token + "\n")
        sys.stdout.flush()
        return
    shown: dict[str, Any] = {
        "token": answer.token,
        "expiresAt": None if answer.expires_at is None else answer.expires_at.isoformat(),
        "tokenId": answer.token_id,
        "connector": {"id": answer.connector.id, "uid": answer.connector.uid, "type": answer.connector.type},
    }
    if answer.metadata:
        shown["metadata"] = dict(answer.metadata)
    if fmt is Format.table:
        shown["connector"] = answer.connector.uid
        shown["expiresAt"] = short_time(shown["expiresAt"])
    emit_fields(shown, fmt, title=f"token: {answer.connector.uid}")


def _workload_uid(ctx: typer.Context, value: str) -> str:
    """The uid for a workload call (the Connect API names connectors by uid): a connector id
    is looked up with the member credential."""
    if not is_connector_id(value):
        return value
    try:
        return _uid(broker(ctx), value)
    except CredentialsNotFound as err:
        raise CredentialsNotFound(
            f"{value} is a connector id; looking up its uid needs the member credential",
            hint=f"Give the connector's uid (service/name) instead. {err.hint or ''}".strip(),
        ) from None


def _linked_identity(ctx: typer.Context) -> tuple[str, str] | None:
    """(broker URL, a five-minute development identity) for the linked project, when this
    directory is linked and a member credential is at hand; else None."""
    try:
        _, linked = find_link()
        client = broker(ctx)
    except (ProjectNotLinked, CredentialsNotFound):
        return None
    if linked.get("url") and linked["url"].rstrip("/") != client.url:
        return None
    answer = client.post(
        f"/v1/projects/{seg(linked['project'])}/development-identity", {"ttlSeconds": 300}
    )
    return str(answer.get("url") or client.url), str(answer["token"])


_REVOKE_FIELDS = ["tokensFound", "deleted", "providerRevoked", "providerSkipped", "providerFailed"]


@app.command("revoke-tokens")
def revoke_tokens(
    ctx: typer.Context,
    uid: UidArg,
    my_tokens: Annotated[
        bool,
        typer.Option(
            "--my-tokens", help="Tokens issued to this workload identity, for one subject."
        ),
    ] = False,
    all_tokens: Annotated[
        bool,
        typer.Option(
            "--all-tokens", help="Every token of the connector (needs a member credential)."
        ),
    ] = False,
    subject: Annotated[
        SubjectChoice | None,
        typer.Option("--subject", help="With --my-tokens: app (default) or user."),
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="With --my-tokens: this user's tokens.")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="With --all-tokens: do not ask for confirmation.")
    ] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Revoke issued tokens, at the provider where it supports revocation."""
    if my_tokens == all_tokens:
        raise typer.BadParameter(
            "give exactly one of --my-tokens and --all-tokens", param_hint="--my-tokens"
        )
    uid_path(uid)  # checks the uid
    if all_tokens:
        if subject is not None or user is not None:
            raise typer.BadParameter(
                "--all-tokens takes no --subject or --user", param_hint="--all-tokens"
            )
        members = broker(ctx)
        uid = _uid(members, uid)
        confirm(yes, f"Revoke every token of {uid}, for every project and user?")
        from valetkey.cli.progress import follow_revocation

        result: dict[str, Any] = follow_revocation(
            members.stream_lines(
                "DELETE", f"/v1/connect/connectors/{seg(uid)}/tokens", body={"allTokens": True}
            )
        )
    else:
        from valetkey.sdk.client import Client

        user_id = _user(subject, user)
        uid = _workload_uid(ctx, uid)
        with Client() as client:
            if user_id is None:
                outcome = client.revoke_tokens(uid, subject="app")
            else:
                outcome = client.revoke_tokens(uid, user=user_id)
        result = {
            "tokensFound": outcome.tokens_found,
            "deleted": outcome.deleted,
            "providerRevoked": outcome.provider_revoked,
            "providerSkipped": outcome.provider_skipped,
            "providerFailed": outcome.provider_failed,
            **dict(outcome.extra),
        }
    emit_fields(
        result,
        fmt,
        title=f"revoked: {uid}",
        fields=[*_REVOKE_FIELDS, *(k for k in result if k not in _REVOKE_FIELDS)],
    )
    if fmt is Format.table and result.get("providerSkipped"):
        note(
            "Skipped tokens could not be revoked at the provider (it has no revocation API): "
            "the broker stops handing them out, but a copy already issued stays valid "
            "until it expires."
        )


consent.register(app)
