"""The SDK clients: :class:`AsyncClient` and its thread-safe sync twin :class:`Client`.

Both speak the Connect wire format (see ``docs/architecture.md``), cache tokens per
caller identity and normalized request, merge concurrent identical requests, and
evict precisely on revoke. A cache hit does no I/O, takes no lock and builds no JSON.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import httpx

from valetkey.errors import IdentityNotFound, InvalidRequest
from valetkey.sdk import _wire
from valetkey.sdk.cache import (
    DEFAULT_MAX_SIZE,
    CacheKey,
    TokenCache,
    normalize_scopes,
    normalize_strings,
)
from valetkey.sdk.identity import (
    IdentityInput,
    IdentitySource,
    discover_identity,
    dotenv_for_url,
    find_dotenv,
    resolve_base_url,
)
from valetkey.sdk.single_flight import AsyncSingleFlight, SyncSingleFlight
from valetkey.sdk.types import (
    AuthorizationResponse,
    Confirmation,
    ConnectorMetadata,
    RevokeResult,
    Subject,
    SubjectLike,
    TokenResponse,
    subject_from,
)

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_VALIDITY_BUFFER", "AsyncClient", "Client", "TimeSource"]

DEFAULT_TIMEOUT = 10.0
DEFAULT_VALIDITY_BUFFER = 30.0
_MAX_DIGESTS = 64
_UNSET: Any = object()


class TimeSource(Protocol):
    """Anything with ``timestamp()``, like ``valetkey.core.clock.Clock``."""

    def timestamp(self) -> float: ...


@functools.cache
def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"valetkey-python/{version('valetkey')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "valetkey-python"


def _seconds(value: float | timedelta, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise InvalidRequest(f"{what} must not be negative", field=what)
    return seconds


class _Base:
    """Configuration, identity, cache keys and request bodies shared by both clients."""

    def __init__(
        self,
        *,
        base_url: str | None,
        identity: IdentityInput | None,
        validity_buffer: float | timedelta,
        cache_size: int,
        clock: TimeSource | None,
    ) -> None:
        self._dotenv: Path | object | None = _UNSET
        self._resolved_url: str | None = None
        if base_url is not None or os.environ.get("VALETKEY_URL", "").strip():
            self._resolved_url = resolve_base_url(base_url)
        # Else decided with the identity: a .env's URL only with that .env's identity.
        self._source: IdentitySource | None = (
            None if identity is None else discover_identity(identity)
        )
        self._buffer = _seconds(validity_buffer, "validity_buffer")
        self._cache = TokenCache(cache_size)
        self._now = clock.timestamp if clock is not None else time.time
        self._digests: dict[str, str] = {}
        self._init_lock = threading.Lock()
        self._headers = {"Accept": "application/json", "User-Agent": _user_agent()}

    @property
    def base_url(self) -> str:
        """The broker's URL, without a trailing slash."""
        return self._base_url

    @property
    def _base_url(self) -> str:
        url = self._resolved_url
        if url is None:
            try:
                source: IdentitySource | None = self._ensure_source()
            except IdentityNotFound:
                source = None
            url = resolve_base_url(None, dotenv=dotenv_for_url(source, self._dotenv_path()))
            self._resolved_url = url
        return url

    @property
    def identity_source(self) -> str:
        """Where the identity comes from (``"VALETKEY_TOKEN"``, ``"GitHub Actions OIDC"``, ...)."""
        return self._ensure_source().name

    def clear_cache(self) -> None:
        """Forget every cached token."""
        self._cache.clear()

    def _dotenv_path(self) -> Path | None:
        if self._dotenv is _UNSET:
            self._dotenv = find_dotenv()
        return self._dotenv  # type: ignore[return-value]

    def _ensure_source(self) -> IdentitySource:
        source = self._source
        if source is None:
            with self._init_lock:
                if self._source is None:
                    self._source = discover_identity(dotenv=self._dotenv_path())
                source = self._source
        return source

    def _digest(self, identity: str) -> str:
        digest = hashlib.sha256(identity.encode()).hexdigest()
        if len(self._digests) >= _MAX_DIGESTS:
            self._digests.clear()
        self._digests[identity] = digest
        return digest

    def _key(
        self,
        identity: str,
        uid: str,
        subject: SubjectLike | None,
        user: str | None,
        scopes: str | Iterable[str] | None,
        installation_id: str | None,
        resources: str | Iterable[str] | None,
        audience: str | None,
    ) -> tuple[CacheKey, dict[str, Any] | None]:
        if not isinstance(uid, str) or not uid:
            _wire.check_uid(uid)
        if subject is None and user is None:
            subject_key, wire = "app", None
        else:
            subject_key, wire = subject_from(subject, user)
        digest = self._digests.get(identity) or self._digest(identity)
        key: CacheKey = (
            self._base_url,
            digest,
            uid,
            subject_key,
            None if scopes is None else normalize_scopes(scopes),
            installation_id,
            None if resources is None else normalize_strings(resources, "resources"),
            audience,
        )
        return key, wire

    @staticmethod
    def _token_body(key: CacheKey, wire: dict[str, Any] | None) -> dict[str, Any]:
        _, _, _, _, scopes, installation_id, resources, audience = key
        body: dict[str, Any] = {"subject": {"type": "app"} if wire is None else wire}
        if scopes is not None:
            body["scopes"] = list(scopes)
        if installation_id is not None:
            if not isinstance(installation_id, str):
                raise InvalidRequest("installation_id must be a string", field="installation_id")
            body["installationId"] = installation_id
        if resources is not None:
            body["resources"] = list(resources)
        if audience is not None:
            if not isinstance(audience, str):
                raise InvalidRequest("audience must be a string", field="audience")
            body["audience"] = audience
        return body

    @staticmethod
    def _authorize_body(
        user: str,
        scopes: str | Iterable[str] | None,
        installation_id: str | None,
        return_url: str | None,
        webhook: str | None,
        device_code: bool,
        issuer: str | None = None,
    ) -> dict[str, Any]:
        if issuer is None:
            _, wire = subject_from(None, user)
        else:
            _, wire = subject_from(Subject.user(user, issuer=issuer), None)
        body: dict[str, Any] = {"subject": wire}
        normalized = None if scopes is None else normalize_scopes(scopes)
        if normalized is not None:
            body["scopes"] = list(normalized)
        for name, value in (
            ("installationId", installation_id),
            ("returnUrl", return_url),
            ("webhook", webhook),
        ):
            if value is not None:
                if not isinstance(value, str) or not value:
                    raise InvalidRequest(f"{name} must be a non-empty string", field=name)
                body[name] = value
        if device_code:
            body["deviceCode"] = True
        return body

    @staticmethod
    def _revoke_body(
        subject: SubjectLike | None, user: str | None, all_tokens: bool
    ) -> tuple[str | None, dict[str, Any]]:
        if all_tokens:
            if subject is not None or user is not None:
                raise InvalidRequest(
                    "all_tokens=True revokes every subject's tokens; do not name a subject",
                    field="subject",
                )
            return None, {}
        if subject is None and user is None:
            raise InvalidRequest(
                "name the tokens to revoke: subject='app', user=..., or all_tokens=True",
                field="subject",
            )
        subject_key, wire = subject_from(subject, user)
        return subject_key, {"subject": wire}

    def _auth_headers(self, identity: str) -> dict[str, str]:
        return {**self._headers, "Authorization": f"Bearer {identity}"}


class Client(_Base):
    """The synchronous client. Thread-safe: share one per process.

    ``identity`` is a string or a callable returning one; without it the identity is
    discovered (see :mod:`valetkey.sdk.identity`) on first use. ``transport`` replaces
    the HTTP transport (tests pass an ``httpx.MockTransport``).
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        identity: IdentityInput | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        validity_buffer: float | timedelta = DEFAULT_VALIDITY_BUFFER,
        cache_size: int = DEFAULT_MAX_SIZE,
        clock: TimeSource | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            identity=identity,
            validity_buffer=validity_buffer,
            cache_size=cache_size,
            clock=clock,
        )
        self._http = httpx.Client(transport=transport, timeout=timeout)
        self._flight: SyncSingleFlight[TokenResponse] = SyncSingleFlight()

    def close(self) -> None:
        """Close the HTTP connections."""
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

    def _identity(self) -> str:
        source = self._ensure_source()
        identity = source.current()
        return identity if identity is not None else source.fetch(self._http)

    def _send(
        self, method: str, path: str, identity: str, body: Mapping[str, Any] | None
    ) -> httpx.Response:
        try:
            return self._http.request(
                method, self._base_url + path, headers=self._auth_headers(identity), json=body
            )
        except httpx.HTTPError as exc:
            raise _wire.unavailable(self._base_url, exc) from exc

    def get_token(
        self,
        uid: str,
        *,
        subject: SubjectLike | None = None,
        user: str | None = None,
        scopes: str | Iterable[str] | None = None,
        installation_id: str | None = None,
        resources: str | Iterable[str] | None = None,
        audience: str | None = None,
        force_refresh: bool = False,
        no_cache: bool = False,
    ) -> str:
        """A provider token for connector ``uid``; see :meth:`get_token_response`."""
        return self.get_token_response(
            uid,
            subject=subject,
            user=user,
            scopes=scopes,
            installation_id=installation_id,
            resources=resources,
            audience=audience,
            force_refresh=force_refresh,
            no_cache=no_cache,
        ).token

    def get_token_response(
        self,
        uid: str,
        *,
        subject: SubjectLike | None = None,
        user: str | None = None,
        scopes: str | Iterable[str] | None = None,
        installation_id: str | None = None,
        resources: str | Iterable[str] | None = None,
        audience: str | None = None,
        force_refresh: bool = False,
        no_cache: bool = False,
    ) -> TokenResponse:
        """A provider token and its metadata, from the cache while it stays valid long enough.

        The subject is the app unless ``subject=`` or ``user=`` names another.
        ``force_refresh`` skips (and drops) the cached entry; ``no_cache`` neither
        reads nor writes the cache.
        """
        source = self._source
        identity = source.current() if source is not None else None
        if identity is None:
            identity = self._identity()
        key, wire = self._key(
            identity, uid, subject, user, scopes, installation_id, resources, audience
        )
        if not (force_refresh or no_cache):
            hit = self._cache.get(key, self._now(), self._buffer)
            if hit is not None:
                return hit
        return self._miss(key, identity, wire, force_refresh, no_cache)

    def _miss(
        self,
        key: CacheKey,
        identity: str,
        wire: dict[str, Any] | None,
        force_refresh: bool,
        no_cache: bool,
    ) -> TokenResponse:
        body = self._token_body(key, wire)
        uid = key[2]
        cache = self._cache

        def load() -> TokenResponse:
            generation = cache.generation(uid)
            response = self._send("POST", _wire.token_path(uid), identity, body)
            token, expires = _wire.token_response(_wire.json_object(response, "token"))
            if not no_cache:
                cache.put(key, token, expires, generation)
            return token

        if no_cache:
            return load()
        if force_refresh:
            cache.delete(key)
            return load()
        return self._flight.run(key, lambda: cache.get(key, self._now(), self._buffer), load)

    def start_authorization(
        self,
        uid: str,
        *,
        user: str,
        scopes: str | Iterable[str] | None = None,
        return_url: str | None = None,
        webhook: str | None = None,
        device_code: bool = False,
        installation_id: str | None = None,
        issuer: str | None = None,
    ) -> AuthorizationResponse:
        """Start a user's consent: browser redirect (``return_url``), webhook, or device code.

        ``issuer`` names who issued ``user`` (None: the app's own users).
        """
        _wire.check_uid(uid)
        body = self._authorize_body(
            user, scopes, installation_id, return_url, webhook, device_code, issuer
        )
        response = self._send("POST", _wire.authorize_path(uid), self._identity(), body)
        return _wire.authorization_response(_wire.json_object(response, "authorization"))

    def confirm_authorization(self, uid: str, *, request: str, verifier: str) -> Confirmation:
        """Confirm, from the named user's own session, that they finished the consent ``request``.

        Call it where the browser comes back (``valetkey_request`` in the return URL), with the
        ``verifier`` kept from ``start_authorization`` in that user's session (docs/security.md).
        """
        _wire.check_uid(uid)
        body = {"request": request, "verifier": verifier}
        response = self._send("POST", _wire.confirm_path(uid), self._identity(), body)
        return _wire.confirmation(_wire.json_object(response, "confirmation"))

    def revoke_tokens(
        self,
        uid: str,
        *,
        subject: SubjectLike | None = None,
        user: str | None = None,
        all_tokens: bool = False,
    ) -> RevokeResult:
        """Revoke one subject's tokens for ``uid`` (or every subject's, with ``all_tokens``).

        The matching cache entries are evicted whatever the outcome.
        """
        _wire.check_uid(uid)
        subject_key, body = self._revoke_body(subject, user, all_tokens)
        identity = self._identity()
        try:
            response = self._send("DELETE", _wire.tokens_path(uid), identity, body)
        finally:
            self._cache.evict(uid, subject_key)
        return _wire.revoke_result(_wire.json_object(response, "revocation"))

    def get_connector(self, uid: str) -> ConnectorMetadata:
        """The connector's public description."""
        _wire.check_uid(uid)
        response = self._send("GET", _wire.connector_path(uid), self._identity(), None)
        return _wire.connector_metadata(_wire.json_object(response, "connector"))


class AsyncClient(_Base):
    """The asyncio client. Share one per event loop; close it with ``await aclose()``.

    Takes the same arguments as :class:`Client`; ``transport`` is an async transport.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        identity: IdentityInput | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        validity_buffer: float | timedelta = DEFAULT_VALIDITY_BUFFER,
        cache_size: int = DEFAULT_MAX_SIZE,
        clock: TimeSource | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            identity=identity,
            validity_buffer=validity_buffer,
            cache_size=cache_size,
            clock=clock,
        )
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)
        self._flight: AsyncSingleFlight[TokenResponse] = AsyncSingleFlight()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _identity(self) -> str:
        source = self._ensure_source()
        identity = source.current()
        return identity if identity is not None else await source.afetch(self._http)

    async def _send(
        self, method: str, path: str, identity: str, body: Mapping[str, Any] | None
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method, self._base_url + path, headers=self._auth_headers(identity), json=body
            )
        except httpx.HTTPError as exc:
            raise _wire.unavailable(self._base_url, exc) from exc

    async def get_token(
        self,
        uid: str,
        *,
        subject: SubjectLike | None = None,
        user: str | None = None,
        scopes: str | Iterable[str] | None = None,
        installation_id: str | None = None,
        resources: str | Iterable[str] | None = None,
        audience: str | None = None,
        force_refresh: bool = False,
        no_cache: bool = False,
    ) -> str:
        """A provider token for connector ``uid``; see :meth:`get_token_response`."""
        response = await self.get_token_response(
            uid,
            subject=subject,
            user=user,
            scopes=scopes,
            installation_id=installation_id,
            resources=resources,
            audience=audience,
            force_refresh=force_refresh,
            no_cache=no_cache,
        )
        return response.token

    async def get_token_response(
        self,
        uid: str,
        *,
        subject: SubjectLike | None = None,
        user: str | None = None,
        scopes: str | Iterable[str] | None = None,
        installation_id: str | None = None,
        resources: str | Iterable[str] | None = None,
        audience: str | None = None,
        force_refresh: bool = False,
        no_cache: bool = False,
    ) -> TokenResponse:
        """A provider token and its metadata, from the cache while it stays valid long enough.

        The subject is the app unless ``subject=`` or ``user=`` names another.
        ``force_refresh`` skips (and drops) the cached entry; ``no_cache`` neither
        reads nor writes the cache.
        """
        source = self._source
        identity = source.current() if source is not None else None
        if identity is None:
            identity = await self._identity()
        key, wire = self._key(
            identity, uid, subject, user, scopes, installation_id, resources, audience
        )
        if not (force_refresh or no_cache):
            hit = self._cache.get(key, self._now(), self._buffer)
            if hit is not None:
                return hit
        body = self._token_body(key, wire)
        cache = self._cache
        uid = key[2]

        async def load() -> TokenResponse:
            generation = cache.generation(uid)
            response = await self._send("POST", _wire.token_path(uid), identity, body)
            token, expires = _wire.token_response(_wire.json_object(response, "token"))
            if not no_cache:
                cache.put(key, token, expires, generation)
            return token

        if no_cache:
            return await load()
        if force_refresh:
            cache.delete(key)
            return await load()
        return await self._flight.run(key, load)

    async def start_authorization(
        self,
        uid: str,
        *,
        user: str,
        scopes: str | Iterable[str] | None = None,
        return_url: str | None = None,
        webhook: str | None = None,
        device_code: bool = False,
        installation_id: str | None = None,
        issuer: str | None = None,
    ) -> AuthorizationResponse:
        """Start a user's consent: browser redirect (``return_url``), webhook, or device code.

        ``issuer`` names who issued ``user`` (None: the app's own users).
        """
        _wire.check_uid(uid)
        body = self._authorize_body(
            user, scopes, installation_id, return_url, webhook, device_code, issuer
        )
        response = await self._send("POST", _wire.authorize_path(uid), await self._identity(), body)
        return _wire.authorization_response(_wire.json_object(response, "authorization"))

    async def confirm_authorization(self, uid: str, *, request: str, verifier: str) -> Confirmation:
        """Confirm, from the named user's own session, that they finished the consent ``request``."""
        _wire.check_uid(uid)
        body = {"request": request, "verifier": verifier}
        response = await self._send("POST", _wire.confirm_path(uid), await self._identity(), body)
        return _wire.confirmation(_wire.json_object(response, "confirmation"))

    async def revoke_tokens(
        self,
        uid: str,
        *,
        subject: SubjectLike | None = None,
        user: str | None = None,
        all_tokens: bool = False,
    ) -> RevokeResult:
        """Revoke one subject's tokens for ``uid`` (or every subject's, with ``all_tokens``).

        The matching cache entries are evicted whatever the outcome.
        """
        _wire.check_uid(uid)
        subject_key, body = self._revoke_body(subject, user, all_tokens)
        identity = await self._identity()
        try:
            response = await self._send("DELETE", _wire.tokens_path(uid), identity, body)
        finally:
            self._cache.evict(uid, subject_key)
        return _wire.revoke_result(_wire.json_object(response, "revocation"))

    async def get_connector(self, uid: str) -> ConnectorMetadata:
        """The connector's public description."""
        _wire.check_uid(uid)
        response = await self._send("GET", _wire.connector_path(uid), await self._identity(), None)
        return _wire.connector_metadata(_wire.json_object(response, "connector"))
