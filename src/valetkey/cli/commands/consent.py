"""``valetkey connect authorize | wait | confirm | import``: a user's consent, from the command line.

``authorize`` and ``confirm`` act as the workload (the identity the SDK finds: VALETKEY_TOKEN,
VALETKEY_OIDC_TOKEN, …, or the ``.env`` written by ``valetkey env pull``), exactly as an app
calling ``start_authorization`` does. ``import`` acts as the workload too, or, with
``--project``, with the member credential for that project's environment.

Secrets given on the command line (tokens, the verifier) may be ``@path`` or ``@-`` (stdin) so
they stay out of shell history; they are never printed back.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TextIO

import httpx2
import typer

from valetkey.cli.broker import seg, uid_path
from valetkey.cli.errors import CliError
from valetkey.cli.output import Format, FormatOption, emit_fields, note, say, short_time
from valetkey.cli.parsing import parse_list
from valetkey.cli.state import broker
from valetkey.errors import (
    AuthorizationExpired,
    AuthorizationPending,
    InvalidRequest,
    ValetkeyError,
)

__all__ = ["read_secret", "register"]

UidArg = Annotated[str, typer.Argument(help="The connector's uid, service/name (like oauth/acme).")]
UserOption = Annotated[str, typer.Option("--user", help="The user the consent is for.")]
ScopesOption = Annotated[
    list[str] | None,
    typer.Option("--scopes", help="Scopes to ask for, comma-separated (default: the ceiling)."),
]
#: A secret read from a file or stdin is refused past this size.
MAX_SECRET_BYTES = 64 * 1024
#: The device poll interval when the broker names none (RFC 8628 §3.2 default).
DEFAULT_INTERVAL = 5.0

_VERIFIER_NOTE = (
    "Keep the verifier: once the user has consented, the app presents it to finish "
    "(here: valetkey connect confirm {uid} --request {request} --verifier @FILE). It binds "
    "the consent to {user}; never show it to the user or put it in a link."
)


def read_secret(value: str, option: str, *, stdin: TextIO | None = None) -> str:
    """A secret option's value: literal, ``@path`` (a file) or ``@-`` (stdin), stripped."""
    text = value
    if value.startswith("@"):
        target = value[1:]
        if target == "-":
            text = (stdin or sys.stdin).read(MAX_SECRET_BYTES + 1)
        else:
            try:
                with open(Path(target).expanduser(), encoding="utf-8") as fh:
                    text = fh.read(MAX_SECRET_BYTES + 1)
            except OSError as exc:
                raise CliError(
                    f"{option}: cannot read {target} ({exc.strerror})", field=option
                ) from exc
            except UnicodeDecodeError as exc:
                raise InvalidRequest(f"{option}: {target} is not UTF-8 text", field=option) from exc
        if len(text) > MAX_SECRET_BYTES:
            raise InvalidRequest(f"{option}: more than {MAX_SECRET_BYTES} bytes", field=option)
    text = text.strip()
    if not text or any(ch.isspace() for ch in text):
        # Never echo the value: it is a secret.
        raise InvalidRequest(f"{option}: expected one token, without spaces", field=option)
    return text


def _one_stdin(values: Mapping[str, str | None]) -> None:
    readers = [option for option, value in values.items() if value == "@-"]
    if len(readers) > 1:
        raise typer.BadParameter(
            f"only one option can read stdin (@-): {', '.join(readers)}", param_hint=readers[1]
        )


def _workload_post(path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """POST to the Connect API as the workload identity the SDK would find."""
    from valetkey.sdk import _wire
    from valetkey.sdk.identity import (
        discover_identity,
        dotenv_for_url,
        find_dotenv,
        resolve_base_url,
    )

    dotenv = find_dotenv()
    source = discover_identity(dotenv=dotenv)
    base = resolve_base_url(None, dotenv=dotenv_for_url(source, dotenv))
    with httpx2.Client(timeout=30) as http:
        identity = source.current() or source.fetch(http)
        try:
            response = http.post(
                base + path, json=dict(body), headers={"Authorization": f"Bearer {identity}"}
            )
        except httpx2.HTTPError as exc:
            raise _wire.unavailable(base, exc) from exc
        return _wire.json_object(response, "broker")


def authorize(
    uid: UidArg,
    user: UserOption,
    device: Annotated[
        bool, typer.Option("--device", help="A device code, for a user on another device.")
    ] = False,
    return_url: Annotated[
        str | None,
        typer.Option("--return-url", help="Where the broker sends the browser back after consent."),
    ] = None,
    webhook: Annotated[
        str | None,
        typer.Option("--webhook", help="An https URL the broker calls when consent completes."),
    ] = None,
    scopes: ScopesOption = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="With --device: wait until the user has approved."),
    ] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Start a user's consent: print the URL to open (and the code to type, for --device)."""
    from valetkey.sdk.client import Client

    modes = [
        name
        for name, on in (("--device", device), ("--return-url", return_url), ("--webhook", webhook))
        if on
    ]
    if len(modes) != 1:
        raise typer.BadParameter(
            "give exactly one of --device, --return-url and --webhook", param_hint="--device"
        )
    if wait and not device:
        raise typer.BadParameter("--wait needs --device", param_hint="--wait")
    uid_path(uid)  # checks the uid
    with Client() as client:
        started = client.start_authorization(
            uid,
            user=user,
            scopes=parse_list(scopes),
            return_url=return_url,
            webhook=webhook,
            device_code=device,
        )
        expires_ms = (
            None if started.expires_at is None else int(started.expires_at.timestamp() * 1000)
        )
        shown: dict[str, Any] = {"url": started.url}
        if started.device_code is not None:
            shown["userCode"] = started.device_code
        shown["request"] = started.request
        shown["expiresAt"] = expires_ms
        if not device:
            shown["verifier"] = started.verifier
        if fmt is Format.json:
            emit_fields(shown, fmt)
        else:
            _print_started(shown, uid, user)
        if wait:
            deadline = time.monotonic() + (
                60.0
                if started.expires_at is None
                else max(started.expires_at.timestamp() - time.time(), 0) + 5
            )
            _wait_for_request(client, uid, user, started.request, deadline, fmt)


def _print_started(shown: Mapping[str, Any], uid: str, user: str) -> None:
    """``name: value`` lines, never wrapped, so the URL and the values stay copyable."""
    labels = {"url": "url", "userCode": "user code", "request": "request", "verifier": "verifier"}
    for key, label in labels.items():
        if key in shown:
            say(f"{label + ':':<11}{shown[key]}")
    say(f"{'expires:':<11}{short_time(shown['expiresAt'])} UTC")
    if "userCode" in shown:
        note(
            f"Open the url and check that it shows the code {shown['userCode']}; sign in and approve."
        )
    else:
        note(_VERIFIER_NOTE.format(uid=uid, request=shown["request"], user=user))


def _resume_command(uid: str, user: str, request: str) -> str:
    return f"valetkey connect wait {uid} --user {user} --request {request}"


def _wait_for_request(
    client: Any,
    uid: str,
    user: str,
    request: str,
    deadline: float,
    fmt: Format,
    *,
    timeout: int | None = None,
) -> None:
    """Wait for consent ``request`` (and only it); on Ctrl-C say how to resume, exit 130."""
    line = StatusLine()
    gave_up = None
    if timeout is not None:
        gave_up = CliError(
            f"stopped waiting after {timeout}s: request {request} is still pending",
            hint=f"To wait again: {_resume_command(uid, user, request)}",
        )
    try:
        _wait_for_grant(
            lambda: client.check_authorization(uid, request=request),
            deadline,
            status=line,
            gave_up=gave_up,
        )
    except KeyboardInterrupt:
        line.done()
        note(
            f"Stopped waiting: request {request} is still pending until it expires. "
            f"To wait again: {_resume_command(uid, user, request)}"
        )
        raise typer.Exit(130) from None
    finally:
        line.done()
    if fmt is Format.table:
        say(f"connected: {user} authorized {uid}")


def wait(
    uid: UidArg,
    user: UserOption,
    request: Annotated[
        str, typer.Option("--request", help="The request id authorize printed.")
    ],
    timeout: Annotated[
        int, typer.Option("--timeout", min=1, max=3600, help="Give up after this many seconds.")
    ] = 900,
    fmt: FormatOption = Format.table,
) -> None:
    """Wait until the user finishes consent REQUEST (started by authorize --device)."""
    from valetkey.sdk.client import Client

    uid_path(uid)
    with Client() as client:
        _wait_for_request(
            client, uid, user, request, time.monotonic() + timeout, fmt, timeout=timeout
        )


class StatusLine:
    """One status line on stderr, rewritten in place on a terminal; elsewhere printed once."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._shown = False

    def show(self, text: str) -> None:
        if self._tty:
            self._stream.write("\r\x1b[K" + text)
        elif not self._shown:
            self._stream.write(text + "\n")
        self._stream.flush()
        self._shown = True

    def done(self) -> None:
        """End the line (on a terminal) so what follows starts on its own."""
        if self._tty and self._shown:
            self._stream.write("\n")
            self._stream.flush()
        self._shown = False
        self._tty = False


def _wait_for_grant(
    fetch: Callable[[], object],
    deadline: float,
    sleep: Callable[[float], None] = time.sleep,
    status: StatusLine | None = None,
    gave_up: ValetkeyError | None = None,
) -> None:
    """Poll ``fetch`` until the request completed, the user refuses, or time runs out (then
    ``gave_up``, by default ``AuthorizationExpired``)."""
    line = status or StatusLine()
    started = time.monotonic()
    interval = DEFAULT_INTERVAL
    while True:
        try:
            fetch()  # a token, if any, is never shown
            return
        except AuthorizationPending as pending:
            given = pending.details.get("interval")
            if isinstance(given, int | float) and not isinstance(given, bool) and given > 0:
                interval = float(given)
        # AccessDenied (the user refused) and AuthorizationExpired end the wait as they are.
        now = time.monotonic()
        if now + interval > deadline:
            line.done()
            raise gave_up or AuthorizationExpired(
                "the device code expired before the user approved it"
            )
        line.show(
            f"waiting for the user to approve… {int(now - started)}s (checking every {int(interval)}s)"
        )
        sleep(interval)


def confirm(
    uid: UidArg,
    request: Annotated[str, typer.Option("--request", help="The request id authorize printed.")],
    verifier: Annotated[
        str,
        typer.Option(
            "--verifier", help="The verifier authorize printed: the value, @path or @- (stdin)."
        ),
    ],
    fmt: FormatOption = Format.table,
) -> None:
    """Finish a browser consent: the person who consented is the user authorize named."""
    from valetkey.sdk.client import Client

    uid_path(uid)
    secret = read_secret(verifier, "--verifier")
    with Client() as client:
        done = client.confirm_authorization(uid, request=request, verifier=secret)
    emit_fields(
        {"request": done.request, "status": done.status, "user": done.user}, fmt, title=f"confirmed: {uid}"
    )


def import_tokens(
    ctx: typer.Context,
    uid: UidArg,
    user: UserOption,
    access_token: Annotated[
        str,
        typer.Option(
            "--access-token", help="The user's access token: @path, @- (stdin) or the value."
        ),
    ],
    refresh_token: Annotated[
        str | None,
        typer.Option("--refresh-token", help="Its refresh token: @path, @- (stdin) or the value."),
    ] = None,
    expires_in: Annotated[
        int | None,
        typer.Option("--expires-in", min=1, help="Seconds until the access token expires."),
    ] = None,
    scopes: Annotated[
        list[str] | None,
        typer.Option("--scopes", help="The scopes the token holds, comma-separated."),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(
            "--project", "-p", help="Import with the member credential, into this project."
        ),
    ] = None,
    environment: Annotated[
        str,
        typer.Option("--environment", "-e", help="With --project: the environment."),
    ] = "development",
    fmt: FormatOption = Format.table,
) -> None:
    """Import a user's existing tokens as a grant, without a consent round."""
    uid_path(uid)
    _one_stdin({"--access-token": access_token, "--refresh-token": refresh_token})
    body: dict[str, Any] = {
        "subject": {"type": "user", "id": user},
        "accessToken": read_secret(access_token, "--access-token"),
    }
    if refresh_token is not None:
        body["refreshToken"] = read_secret(refresh_token, "--refresh-token")
    if expires_in is not None:
        body["expiresIn"] = expires_in
    if scopes is not None:
        body["scopes"] = parse_list(scopes)
    path = f"/v1/connect/token/{seg(uid)}/import"
    if project is not None:
        body.update(project=project, environment=environment)
        result: dict[str, Any] = broker(ctx).post(path, body)
    else:
        result = _workload_post(path, body)
    if fmt is Format.table:
        result = {**result, "expiresAt": short_time(result.get("expiresAt"))}
    emit_fields(result, fmt, title=f"imported: {uid}")
    if fmt is Format.table and not result.get("refreshable"):
        note("No refresh token: when the access token expires, the user must consent again.")


def register(app: typer.Typer) -> None:
    """Add the consent commands to ``valetkey connect``."""
    app.command("authorize")(authorize)
    app.command("confirm")(confirm)
    app.command("wait")(wait)
    app.command("import")(import_tokens)
