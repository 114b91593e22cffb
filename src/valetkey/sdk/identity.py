"""Find the identity the SDK presents to the broker, and the broker's URL.

Identity, first match wins:

1. the ``identity=`` argument (a string, or a callable returning one, called per request);
2. ``VALETKEY_TOKEN`` (a broker access token or development identity);
3. ``VALETKEY_OIDC_TOKEN`` (an OIDC JWT the platform handed you);
4. ``VALETKEY_OIDC_TOKEN_FILE`` (a file holding one, like a Kubernetes projected token;
   re-read when its modification time changes, checked at most once a second);
5. GitHub Actions (``ACTIONS_ID_TOKEN_REQUEST_URL`` and ``ACTIONS_ID_TOKEN_REQUEST_TOKEN``;
   audience ``VALETKEY_AUDIENCE``, default ``valetkey``; cached until shortly before it expires);
6. ``VALETKEY_TOKEN`` in the ``.env`` written by ``valetkey env pull``, in the working
   directory or the nearest parent that has one (re-read when it changes).

Base URL: the ``base_url=`` argument, ``VALETKEY_URL``, else ``http://127.0.0.1:8787``, except
that an identity from a ``.env`` (6.) comes with that ``.env``'s ``VALETKEY_URL``. A ``.env``
supplies a URL only together with the identity it holds: an identity from the argument, the
environment, a token file or GitHub Actions is never sent to a URL some ``.env`` in a parent
directory names.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx2

from valetkey.errors import IdentityError, IdentityNotFound, InvalidRequest

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_BASE_URL",
    "CallableIdentity",
    "FileIdentity",
    "GitHubActionsIdentity",
    "IdentityInput",
    "IdentitySource",
    "StaticIdentity",
    "discover_identity",
    "dotenv_for_url",
    "find_dotenv",
    "parse_dotenv",
    "resolve_base_url",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8787"
DEFAULT_AUDIENCE = "valetkey"
#: How long before a GitHub Actions token's ``exp`` it is fetched again (seconds).
GITHUB_REFRESH_MARGIN = 60.0
#: How often a token file's modification time is checked (seconds).
FILE_RECHECK_INTERVAL = 1.0

IdentityInput = str | Callable[[], str]

_DOTENV_KEYS = ("VALETKEY_TOKEN", "VALETKEY_URL")


class IdentitySource:
    """Where the identity comes from. ``current()`` is cheap; ``fetch`` may go to the network."""

    name: str = "identity"

    def current(self) -> str | None:
        """The identity if it is at hand without network I/O, else None (then fetch)."""
        raise NotImplementedError

    def fetch(self, http: httpx2.Client) -> str:
        """The identity, going to the network if the source needs to."""
        return self._required()

    async def afetch(self, http: httpx2.AsyncClient) -> str:
        """The identity, going to the network (asynchronously) if the source needs to."""
        return self._required()

    def _required(self) -> str:
        value = self.current()
        if value is None:
            raise IdentityNotFound(f"{self.name} gave no identity")
        return value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class StaticIdentity(IdentitySource):
    """A fixed identity string."""

    def __init__(self, value: str, name: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise IdentityNotFound(f"{name} is empty")
        self._value = value.strip()
        self.name = name

    def current(self) -> str:
        return self._value


class CallableIdentity(IdentitySource):
    """A callable asked for the identity on every request (it may cache on its own)."""

    name = "identity argument (callable)"

    def __init__(self, supplier: Callable[[], str]) -> None:
        self._supplier = supplier

    def current(self) -> str:
        value = self._supplier()
        if not isinstance(value, str) or not value:
            raise IdentityNotFound("the identity callable returned no token")
        return value


class FileIdentity(IdentitySource):
    """An identity read from a file, re-read when the file changes.

    With ``dotenv_key`` the file is a ``.env`` and the identity is that key's value;
    otherwise the whole file (stripped) is the identity.
    """

    def __init__(
        self,
        path: Path,
        name: str,
        *,
        dotenv_key: str | None = None,
        recheck_interval: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.name = name
        self.dotenv_key = dotenv_key
        self._interval = FILE_RECHECK_INTERVAL if recheck_interval is None else recheck_interval
        self._monotonic = monotonic
        self._next_check = -float("inf")
        self._stamp: tuple[int, int, int] | None = None
        self._value: str | None = None
        self._lock = threading.Lock()

    def current(self) -> str | None:
        now = self._monotonic()
        if now >= self._next_check:
            self._refresh(now)
        return self._value

    def _refresh(self, now: float) -> None:
        with self._lock:
            try:
                info = self.path.stat()
                stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
                if stamp != self._stamp:
                    text = self.path.read_text(encoding="utf-8")
                    self._value = self._extract(text)
                    self._stamp = stamp
            except OSError as exc:
                raise IdentityNotFound(f"{self.name}: cannot read {self.path}") from exc
            self._next_check = now + self._interval

    def _extract(self, text: str) -> str:
        if self.dotenv_key is None:
            value = text.strip()
        else:
            value = parse_dotenv(text).get(self.dotenv_key, "").strip()
        if not value:
            raise IdentityNotFound(f"{self.name}: {self.path} holds no token")
        return value


class GitHubActionsIdentity(IdentitySource):
    """A GitHub Actions OIDC token, requested for an audience and cached until near its exp."""

    name = "GitHub Actions OIDC"

    def __init__(
        self,
        request_url: str,
        request_token: str,
        audience: str = DEFAULT_AUDIENCE,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = request_url
        self._request_token = request_token
        self._audience = audience
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<GitHubActionsIdentity audience={self._audience!r}>"

    def current(self) -> str | None:
        token = self._token
        if token is not None and self._clock() < self._refresh_at:
            return token
        return None

    def _request(self) -> tuple[httpx2.URL, dict[str, str]]:
        # Merged, not replaced: the request URL GitHub gives already has a query string.
        url = httpx2.URL(self._url).copy_merge_params({"audience": self._audience})
        headers = {
            "Authorization": f"Bearer {self._request_token}",
            "Accept": "application/json; api-version=2.0",
        }
        return url, headers

    def fetch(self, http: httpx2.Client) -> str:
        with self._lock:
            token = self.current()
            if token is not None:
                return token
            url, headers = self._request()
            try:
                response = http.get(url, headers=headers)
            except httpx2.HTTPError as exc:
                raise IdentityError(
                    f"could not request a GitHub Actions OIDC token ({type(exc).__name__})"
                ) from exc
            return self._accept(response)

    async def afetch(self, http: httpx2.AsyncClient) -> str:
        token = self.current()
        if token is not None:
            return token
        url, headers = self._request()
        try:
            response = await http.get(url, headers=headers)
        except httpx2.HTTPError as exc:
            raise IdentityError(
                f"could not request a GitHub Actions OIDC token ({type(exc).__name__})"
            ) from exc
        return self._accept(response)

    def _accept(self, response: httpx2.Response) -> str:
        if not response.is_success:
            raise IdentityError(
                f"GitHub Actions refused the OIDC token request (HTTP {response.status_code}); "
                "does the job have `permissions: id-token: write`?"
            )
        try:
            value = response.json().get("value")
        except (ValueError, AttributeError) as exc:
            raise IdentityError("GitHub Actions answered the token request without JSON") from exc
        if not isinstance(value, str) or not value:
            raise IdentityError("GitHub Actions answered the OIDC token request without a token")
        now = self._clock()
        exp = _jwt_exp(value)
        self._refresh_at = (exp - GITHUB_REFRESH_MARGIN) if exp is not None else now
        self._token = value
        return value


def _jwt_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verification (the broker verifies it)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines: ``#`` comments, optional ``export``, optional quotes."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in ("'", '"'):
            value = value[1:-1]
        else:
            comment = value.find(" #")
            if comment >= 0:
                value = value[:comment].rstrip()
        values[key] = value
    return values


def _read_dotenv(path: Path) -> dict[str, str]:
    try:
        return parse_dotenv(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return {}


def find_dotenv(start: Path | None = None) -> Path | None:
    """The nearest ``.env`` at or above ``start`` (default: cwd) that sets a VALETKEY_ key."""
    try:
        here = (start or Path.cwd()).resolve()
    except OSError:
        return None
    for folder in (here, *here.parents):
        candidate = folder / ".env"
        if candidate.is_file() and any(k in _read_dotenv(candidate) for k in _DOTENV_KEYS):
            return candidate
    return None


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def discover_identity(
    explicit: IdentityInput | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    dotenv: Path | None = None,
    clock: Callable[[], float] = time.time,
) -> IdentitySource:
    """The first identity source that applies, in the documented order; else IdentityNotFound."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if explicit is not None:
        if callable(explicit):
            return CallableIdentity(explicit)
        return StaticIdentity(explicit, "identity argument")
    for name in ("VALETKEY_TOKEN", "VALETKEY_OIDC_TOKEN"):
        value = _env(env, name)
        if value is not None:
            return StaticIdentity(value, name)
    token_file = _env(env, "VALETKEY_OIDC_TOKEN_FILE")
    if token_file is not None:
        return FileIdentity(Path(token_file), "VALETKEY_OIDC_TOKEN_FILE")
    request_url = _env(env, "ACTIONS_ID_TOKEN_REQUEST_URL")
    request_token = _env(env, "ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if request_url is not None and request_token is not None:
        audience = _env(env, "VALETKEY_AUDIENCE") or DEFAULT_AUDIENCE
        return GitHubActionsIdentity(request_url, request_token, audience, clock=clock)
    if dotenv is not None and _read_dotenv(dotenv).get("VALETKEY_TOKEN", "").strip():
        return FileIdentity(dotenv, f".env ({dotenv})", dotenv_key="VALETKEY_TOKEN")
    raise IdentityNotFound(_not_found(dotenv))


def _not_found(dotenv: Path | None) -> str:
    """What was searched, in order, and where a development identity would have been."""
    if dotenv is not None:
        where = f"{dotenv} (it has no VALETKEY_TOKEN)"
    else:
        try:
            here = str(Path.cwd())
        except OSError:
            here = "the working directory"
        where = f"no .env with a VALETKEY_ key in {here} or any directory above it"
    return (
        "no identity found to present to the Valetkey broker. Searched: the identity argument, "
        "VALETKEY_TOKEN, VALETKEY_OIDC_TOKEN, VALETKEY_OIDC_TOKEN_FILE, GitHub Actions "
        f"(ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN), then a .env: {where}. For development, run "
        "`valetkey link --project P` and `valetkey env pull` in the app's directory."
    )


def dotenv_for_url(source: IdentitySource | None, dotenv: Path | None) -> Path | None:
    """The ``.env`` that may supply the broker URL: ``dotenv`` if the identity came from it, else None."""
    if (
        dotenv is not None
        and isinstance(source, FileIdentity)
        and source.dotenv_key is not None
        and source.path == dotenv
    ):
        return dotenv
    return None


def resolve_base_url(
    explicit: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    dotenv: Path | None = None,
) -> str:
    """The broker URL: explicit, ``VALETKEY_URL``, the ``.env``, else the local default.

    Pass as ``dotenv`` only what :func:`dotenv_for_url` returns for the identity in use.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    url = explicit or _env(env, "VALETKEY_URL")
    if url is None and dotenv is not None:
        url = _read_dotenv(dotenv).get("VALETKEY_URL", "").strip() or None
    url = (url or DEFAULT_BASE_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InvalidRequest("the broker URL must start with http:// or https://", field="base_url")
    return url
