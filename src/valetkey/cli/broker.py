"""The management API over HTTP, with the member credential the CLI finds on its own.

Credentials, first match wins:

1. ``VALETKEY_API_TOKEN`` (a member credential ``vk_pt_…``), sent to ``VALETKEY_URL``
   (else the URL in ``cli.json``, else ``http://127.0.0.1:8787``);
2. ``<data dir>/cli.json`` (``{"url", "token"}``), written by ``valetkey serve`` on its first
   start; the data directory is ``--data-dir``, else ``VALETKEY_DATA_DIR``, else the default.

The token is only ever sent in the ``Authorization`` header: never printed, never logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx2

from valetkey.cli.errors import CredentialsNotFound
from valetkey.core.models import is_connector_id, parse_uid
from valetkey.error_codes import error_for_code
from valetkey.errors import BrokerUnavailable, InvalidBrokerResponse, ValetkeyError
from valetkey.server.settings import default_data_dir

__all__ = [
    "BrokerClient",
    "Credentials",
    "broker_url",
    "find_credentials",
    "seg",
    "uid_path",
    "write_cli_file",
]

DEFAULT_URL = "http://127.0.0.1:8787"
TIMEOUT = 30.0


@dataclass(frozen=True)
class Credentials:
    """Where the broker is and the member credential to present (never in repr)."""

    url: str
    token: str = field(repr=False)
    source: str


def _read_cli_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CredentialsNotFound(
            f"{path} is not readable JSON ({type(exc).__name__})",
            hint="Delete it and restart `valetkey serve`.",
        ) from exc
    return data if isinstance(data, dict) else None


def broker_url(data_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The broker's URL as the CLI finds it: ``VALETKEY_URL``, else ``cli.json``'s, else the default."""
    env = os.environ if environ is None else environ
    url = env.get("VALETKEY_URL", "").strip()
    if not url:
        saved = _read_cli_file((data_dir or default_data_dir()) / "cli.json") or {}
        url = str(saved.get("url") or DEFAULT_URL)
    return url.rstrip("/")


def find_credentials(
    data_dir: Path | None = None, environ: Mapping[str, str] | None = None
) -> Credentials:
    """The member credential and broker URL, from the environment or the local ``cli.json``."""
    env = os.environ if environ is None else environ
    directory = data_dir or default_data_dir()
    path = directory / "cli.json"
    token = env.get("VALETKEY_API_TOKEN", "").strip()
    url = env.get("VALETKEY_URL", "").strip()
    if token:
        if not url:
            saved = _read_cli_file(path) or {}
            url = str(saved.get("url") or DEFAULT_URL)
        return Credentials(url.rstrip("/"), token, "VALETKEY_API_TOKEN")
    stored = _read_cli_file(path)
    if stored and isinstance(stored.get("token"), str) and stored["token"]:
        return Credentials(
            str(stored.get("url") or DEFAULT_URL).rstrip("/"), stored["token"], str(path)
        )
    raise CredentialsNotFound(
        "no member credential found for the Valetkey management API",
        hint=(
            "Set VALETKEY_URL and VALETKEY_API_TOKEN (a vk_pt_… credential from "
            "`valetkey members create`), "
            f"or run `valetkey serve` on this machine, which writes {path} "
            "(use --data-dir or VALETKEY_DATA_DIR for another data directory)."
        ),
    )


def write_cli_file(path: Path, data: Mapping[str, str]) -> None:
    """Rewrite ``cli.json`` with mode 0600 from the first byte (atomic replace)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(dict(data), fh, indent=2)
    os.replace(tmp, path)


def seg(value: str) -> str:
    """One path segment (a project slug, an id), percent-encoded so it stays one segment."""
    return quote(value, safe="")


def uid_path(uid: str) -> str:
    """A connector uid (``service/name`` keeps its slash) or id (``con_…``) in a management
    path; checked first."""
    if not is_connector_id(uid):
        parse_uid(uid)
    return quote(uid, safe="/")


def error_from(response: httpx2.Response) -> ValetkeyError:
    """The typed error for a refusal in the broker's ``{"error": {"code", "message"}}`` envelope."""
    try:
        body = response.json()
    except ValueError:
        body = None
    envelope = body.get("error") if isinstance(body, dict) else None
    if isinstance(envelope, dict) and isinstance(envelope.get("code"), str):
        message = envelope.get("message")
        details = {k: v for k, v in envelope.items() if k not in ("code", "message")}
        text = message if isinstance(message, str) and message else envelope["code"]
        return error_for_code(envelope["code"], text, response.status_code, details)
    if response.status_code >= 500:
        return BrokerUnavailable(f"the broker answered HTTP {response.status_code}")
    return error_for_code(
        f"http_{response.status_code}",
        f"the broker answered HTTP {response.status_code}",
        response.status_code,
        {},
    )


class BrokerClient:
    """A thin synchronous client for ``/v1/...`` that raises typed errors."""

    def __init__(
        self, credentials: Credentials, *, transport: httpx2.BaseTransport | None = None
    ) -> None:
        self.credentials = credentials
        self._http = httpx2.Client(
            base_url=credentials.url,
            timeout=TIMEOUT,
            transport=transport,
            headers={
                "Authorization": f"Bearer {credentials.token}",
                "Accept": "application/json",
                "User-Agent": "valetkey-cli",
            },
        )

    @property
    def url(self) -> str:
        return self.credentials.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body, or raise the refusal's typed error."""
        clean = None if params is None else {k: v for k, v in params.items() if v is not None}
        try:
            response = self._http.request(method, path, json=body, params=clean)
        except httpx2.HTTPError as exc:
            raise BrokerUnavailable(
                f"could not reach the broker at {self.url} ({type(exc).__name__}); "
                "is `valetkey serve` running?",
                url=self.url,
            ) from exc
        if not response.is_success:
            raise error_from(response)
        try:
            return response.json()
        except ValueError as exc:
            raise InvalidBrokerResponse(
                f"the broker's answer to {method} {path} is not JSON"
            ) from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("POST", path, body=body)

    def stream_lines(
        self, method: str, path: str, *, body: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Send one request asking for NDJSON; yield each line's object as it arrives.

        A broker that answers plain JSON (an older one) yields that one object. The wait for
        each line has no deadline: the broker sends one at least every few seconds.
        """
        headers = {"Accept": "application/x-ndjson"}
        try:
            with self._http.stream(
                method, path, json=body, headers=headers, timeout=httpx2.Timeout(TIMEOUT, read=None)
            ) as response:
                if not response.is_success:
                    response.read()
                    raise error_from(response)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError as exc:
                        raise InvalidBrokerResponse(
                            f"the broker's answer to {method} {path} is not JSON lines"
                        ) from exc
                    if isinstance(item, dict):
                        yield item
        except httpx2.HTTPError as exc:
            raise BrokerUnavailable(
                f"could not reach the broker at {self.url} ({type(exc).__name__}); "
                "is `valetkey serve` running?",
                url=self.url,
            ) from exc
