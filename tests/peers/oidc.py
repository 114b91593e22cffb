"""A real OAuth 2.0 / OpenID Connect server for tests: panva's certified ``oidc-provider``.

``OidcProviderPeer.start(config)`` runs ``node tests/peers/oidc_provider/server.mjs`` on an
ephemeral 127.0.0.1 port, waits for its ready line, and hands back the running peer
(``url``, ``stop()``, ``stats()``, ...). Install the server once with
``npm ci --prefix tests/peers/oidc_provider`` (``make test`` does it).

The ``config`` dict (all fields optional) is passed to the server as JSON:

``clients``
    oidc-provider client metadata, as is (``client_id``, ``client_secret``, ``grant_types``,
    ``redirect_uris``, ``response_types``, ``token_endpoint_auth_method``, ``scope`` ...).
    A client's ``scope`` may list only static scopes (``scopes`` below).
``scopes``
    extra static scopes besides ``openid`` and ``offline_access``; a client's ``scope``
    metadata is its ceiling for them.
``resourceServers``
    ``{indicator: {"scope": "a b", "accessTokenFormat": "opaque"|"jwt", "accessTokenTTL": s,
    "audience": ...}}`` for RFC 8707 ``resource`` requests (scopes are filtered to ``scope``).
``defaultResource``
    an indicator applied when a request names none.
``ttl``
    seconds per artifact: ``AccessToken``, ``ClientCredentials``, ``RefreshToken``,
    ``AuthorizationCode``, ``DeviceCode``, ``Grant``, ``Session``, ``Interaction``, ``IdToken``.
``refreshTokens``
    ``{"issue": "always" (default) | "offline_access", "rotate": true (default)}``.
``pkceRequired``
    default true (S256 only).
``features``
    ``{name: bool}`` to switch off ``clientCredentials``, ``introspection``, ``revocation``,
    ``deviceFlow``, ``resourceIndicators``, ``devInteractions`` (all on by default).
``mountPath``
    e.g. ``"/tenant"``: a path-suffixed issuer (``url + mountPath``) with every endpoint under
    it, as oidc-provider mounted by a router; anything outside it answers 404 (so RFC 8414's
    ``/.well-known/oauth-authorization-server/tenant`` is not served, the OIDC
    ``/tenant/.well-known/openid-configuration`` is).
``jwtBearer``
    ``{"issuers": {iss: public JWK}}`` registers the RFC 7523 ``jwt-bearer`` grant: an
    assertion is accepted when its ``iss`` is listed and that key (RS256 or ES256) verifies
    it, ``aud`` is the issuer or the token endpoint URL, ``exp`` is in the future, ``sub`` is
    present, and its ``jti`` is new. The token acts for ``sub``, scopes within the client's.
``tokenExchange``
    ``true`` registers the RFC 8693 ``token-exchange`` grant: ``subject_token`` must be a
    valid user access token from this server (``subject_token_type`` access_token); the new
    token acts for the same account, scopes narrowed within the subject token's, one
    ``audience`` or ``resource`` at most as its ``aud``; ``issued_token_type`` access_token.

A client using them lists the grant's URN in ``grant_types``; ``private_key_jwt`` clients
carry their public keys in ``jwks``.

Login and consent use oidc-provider's ``devInteractions`` (any login, any password):
:meth:`OidcProviderPeer.authorize` and :meth:`OidcProviderPeer.approve_device` drive them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote_plus, urljoin

import httpx2
import pytest

__all__ = [
    "PEER_DIR",
    "OidcProviderPeer",
    "PeerFailed",
    "PeerNotInstalled",
    "basic_authorization",
    "confidential_client",
    "oidc_peer_fixture",
]

PEER_DIR = Path(__file__).resolve().parent / "oidc_provider"
_READY = "VALETKEY_PEER_READY "
_PROMPT = re.compile(r'name="prompt" value="(login|consent)"')
_XSRF = re.compile(r'name="xsrf" value="([^"]+)"')


class PeerNotInstalled(RuntimeError):
    """node or the peer's node_modules are missing."""


class PeerFailed(RuntimeError):
    """The peer exited or did not become ready; the message holds its output."""


def basic_authorization(client_id: str, client_secret: str) -> str:
    """An RFC 6749 §2.3.1 ``Authorization`` value: each part form-urlencoded, then base64.

    (httpx2's ``auth=(id, secret)`` skips the urlencoding, which oidc-provider rightly refuses
    for secrets holding reserved characters.)
    """
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def confidential_client(
    client_id: str,
    client_secret: str,
    *,
    grant_types: tuple[str, ...] = ("client_credentials",),
    auth_method: str = "client_secret_basic",
    **metadata: Any,
) -> dict[str, Any]:
    """Client metadata for a confidential client (no redirect URIs unless given)."""
    client: dict[str, Any] = {
        "client_id": client_id,
        "client_secret": client_secret,
        "grant_types": list(grant_types),
        "token_endpoint_auth_method": auth_method,
        "redirect_uris": [],
        "response_types": [],
    }
    if "authorization_code" in grant_types:
        client["response_types"] = ["code"]
    client.update(metadata)
    return client


class OidcProviderPeer:
    """A running oidc-provider process. Build it with :meth:`start`; end it with :meth:`stop`."""

    def __init__(
        self,
        url: str,
        process: subprocess.Popen[bytes],
        log_path: Path,
        issuer: str | None = None,
    ) -> None:
        self.url = url
        self._issuer = issuer or url
        self._process = process
        self._log_path = log_path

    # -- lifecycle -----------------------------------------------------------------

    @classmethod
    def start(
        cls, config: Mapping[str, Any] | None = None, *, timeout: float = 20.0
    ) -> OidcProviderPeer:
        """Start the server with ``config`` and return once it listens."""
        node = shutil.which("node")
        if node is None:
            raise PeerNotInstalled("node is not on PATH; the oidc-provider peer needs Node.js 20+")
        if not (PEER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise PeerNotInstalled(
                f"{PEER_DIR}/node_modules is missing: run `make test`, or "
                f"`npm ci` in tests/peers/oidc_provider"
            )
        fd, name = tempfile.mkstemp(prefix="valetkey-oidc-peer-", suffix=".log")
        log_path = Path(name)
        env = {**os.environ, "VALETKEY_OIDC_PEER_CONFIG": json.dumps(dict(config or {}))}
        env.pop("NODE_OPTIONS", None)
        with os.fdopen(fd, "wb") as log:
            process = subprocess.Popen(
                [node, "server.mjs", "0"],
                cwd=PEER_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        ready = cls._wait_ready(process, log_path, timeout)
        return cls(str(ready["url"]), process, log_path, str(ready.get("issuer") or ready["url"]))

    @staticmethod
    def _wait_ready(
        process: subprocess.Popen[bytes], log_path: Path, timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = log_path.read_text(errors="replace")
            for line in output.splitlines():
                if line.startswith(_READY):
                    ready: dict[str, Any] = json.loads(line[len(_READY) :])
                    return ready
            if process.poll() is not None:
                log_path.unlink(missing_ok=True)
                raise PeerFailed(f"the oidc-provider peer exited ({process.returncode}):\n{output}")
            time.sleep(0.05)
        process.kill()
        process.wait()
        output = log_path.read_text(errors="replace")
        log_path.unlink(missing_ok=True)
        raise PeerFailed(f"the oidc-provider peer was not ready after {timeout}s:\n{output}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its log."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log_path.unlink(missing_ok=True)

    def __enter__(self) -> OidcProviderPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        """What the server printed so far (for failure messages)."""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- endpoints (oidc-provider's default routes) ---------------------------------

    @property
    def issuer(self) -> str:
        """The issuer identifier: ``url``, plus ``mountPath`` when one is configured."""
        return self._issuer

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    @property
    def revocation_url(self) -> str:
        return f"{self.issuer}/token/revocation"

    @property
    def introspection_url(self) -> str:
        return f"{self.issuer}/token/introspection"

    @property
    def authorization_url(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def device_authorization_url(self) -> str:
        return f"{self.issuer}/device/auth"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    def metadata(self) -> dict[str, Any]:
        """The OpenID discovery document."""
        return self._get_json("/.well-known/openid-configuration", base=self.issuer)

    # -- test-only observation -----------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``{"token": {grant_type: calls}, "tokenErrors": {...}, "revocation": n, ...}``."""
        return self._get_json("/__stats", base=self.issuer)

    def reset_stats(self) -> None:
        httpx2.post(f"{self.issuer}/__stats/reset").raise_for_status()

    def introspect(self, token: str, client_id: str, client_secret: str) -> dict[str, Any]:
        """RFC 7662 introspection at the peer, authenticated as a confidential client."""
        response = httpx2.post(
            self.introspection_url,
            data={"token": token},
            headers={"Authorization": basic_authorization(client_id, client_secret)},
        )
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def _get_json(self, path: str, base: str | None = None) -> dict[str, Any]:
        response = httpx2.get(f"{base or self.url}{path}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    # -- a browser through devInteractions ------------------------------------------

    def authorize(self, authorization_request_url: str, login: str = "alice") -> str:
        """Sign in as ``login`` and consent; return the redirect to the client (not followed)."""
        with httpx2.Client(follow_redirects=False) as browser:
            outcome = self._drive(browser, browser.get(authorization_request_url), login)
        if not isinstance(outcome, str):
            raise PeerFailed(f"the authorization ended on a page, not a redirect: {outcome.url}")
        return outcome

    def approve_device(self, user_code: str, login: str = "alice") -> None:
        """Enter ``user_code`` at the verification page, sign in as ``login`` and consent."""
        with httpx2.Client(follow_redirects=False) as browser:
            page = browser.get(f"{self.issuer}/device")
            match = _XSRF.search(page.text)
            if match is None:
                raise PeerFailed("the device verification page has no xsrf field")
            form = {"xsrf": match.group(1), "user_code": user_code, "confirm": "yes"}
            response = browser.post(f"{self.issuer}/device", data=form)
            outcome = self._drive(browser, response, login)
        if isinstance(outcome, str) or "Sign-in Success" not in outcome.text:
            raise PeerFailed(f"the device approval did not succeed: {_describe(outcome)}")

    def _drive(
        self, browser: httpx2.Client, response: httpx2.Response, login: str
    ) -> str | httpx2.Response:
        for _ in range(20):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if not location.startswith(self.url + "/"):
                    return location
                response = browser.get(location)
                continue
            match = _PROMPT.search(response.text) if response.status_code == 200 else None
            if match is None:
                return response
            form = {"prompt": match.group(1), "login": login, "password": "any"}
            response = browser.post(str(response.url), data=form)
        raise PeerFailed("the authorization did not finish within 20 steps")


def _describe(outcome: str | httpx2.Response) -> str:
    if isinstance(outcome, str):
        return f"redirect to {outcome}"
    return f"HTTP {outcome.status_code} at {outcome.url}: {outcome.text[:300]}"


def oidc_peer_fixture(
    config: Mapping[str, Any], *, scope: Literal["function", "module", "session"] = "module"
) -> Any:
    """A pytest fixture running one peer with ``config`` for ``scope``.

    In a test module: ``oidc_peer = oidc_peer_fixture({...})``.
    """

    @pytest.fixture(scope=scope)
    def _peer() -> Iterator[OidcProviderPeer]:
        peer = OidcProviderPeer.start(config)
        try:
            yield peer
        finally:
            peer.stop()

    return _peer
