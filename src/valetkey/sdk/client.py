"""The SDK clients: :class:`AsyncClient` and its thread-safe sync twin :class:`Client`.

Both speak the Connect wire format (see ``docs/architecture.md``), cache tokens per
caller identity and normalized request, merge concurrent identical requests, and
evict precisely on revoke. A cache hit does no I/O, takes no lock and builds no JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

import httpx2

from valetkey.sdk import _wire
from valetkey.sdk._base import DEFAULT_TIMEOUT, DEFAULT_VALIDITY_BUFFER, TimeSource, _Base
from valetkey.sdk.cache import DEFAULT_MAX_SIZE, CacheKey
from valetkey.sdk.identity import IdentityInput
from valetkey.sdk.single_flight import AsyncSingleFlight, SyncSingleFlight
from valetkey.sdk.types import (
    AuthorizationResponse,
    Confirmation,
    ConnectorMetadata,
    RevokeResult,
    SubjectLike,
    TokenResponse,
)

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_VALIDITY_BUFFER", "AsyncClient", "Client", "TimeSource"]


def _check_transport(transport: object, kind: type) -> None:
    """Refuse a transport of another HTTP library with a message that names the fix."""
    if transport is not None and not isinstance(transport, kind):
        raise TypeError(
            f"transport must be an httpx2.{kind.__name__} (for example httpx2.MockTransport), "
            f"not {type(transport).__module__}.{type(transport).__name__}: the SDK runs on httpx2"
        )


class Client(_Base):
    """The synchronous client. Thread-safe: share one per process.

    ``identity`` is a string or a callable returning one; without it the identity is
    discovered (see :mod:`valetkey.sdk.identity`) on first use. ``transport`` replaces
    the HTTP transport (tests pass an ``httpx2.MockTransport``).
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        identity: IdentityInput | None = None,
        timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT,
        validity_buffer: float | timedelta = DEFAULT_VALIDITY_BUFFER,
        cache_size: int = DEFAULT_MAX_SIZE,
        clock: TimeSource | None = None,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            identity=identity,
            validity_buffer=validity_buffer,
            cache_size=cache_size,
            clock=clock,
        )
        _check_transport(transport, httpx2.BaseTransport)
        self._http = httpx2.Client(transport=transport, timeout=timeout)
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
    ) -> httpx2.Response:
        try:
            return self._http.request(
                method, self._base_url + path, headers=self._auth_headers(identity), json=body
            )
        except httpx2.HTTPError as exc:
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

    def check_authorization(self, uid: str, *, request: str) -> Confirmation:
        """The consent ``request`` (from ``start_authorization``), once it completed.

        Raises ``AuthorizationPending`` (``details["interval"]``: seconds before asking again)
        while the user has not finished, ``AccessDenied`` or ``AuthorizationExpired`` once it
        ended otherwise. Only this request counts: a grant the user already held does not.
        """
        _wire.check_uid(uid)
        response = self._send("POST", _wire.status_path(uid), self._identity(), {"request": request})
        return _wire.confirmation(_wire.json_object(response, "authorization status"))

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
        timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT,
        validity_buffer: float | timedelta = DEFAULT_VALIDITY_BUFFER,
        cache_size: int = DEFAULT_MAX_SIZE,
        clock: TimeSource | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            identity=identity,
            validity_buffer=validity_buffer,
            cache_size=cache_size,
            clock=clock,
        )
        _check_transport(transport, httpx2.AsyncBaseTransport)
        self._http = httpx2.AsyncClient(transport=transport, timeout=timeout)
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
    ) -> httpx2.Response:
        try:
            return await self._http.request(
                method, self._base_url + path, headers=self._auth_headers(identity), json=body
            )
        except httpx2.HTTPError as exc:
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

    async def check_authorization(self, uid: str, *, request: str) -> Confirmation:
        """The consent ``request``, once it completed (see ``Client.check_authorization``)."""
        _wire.check_uid(uid)
        body = {"request": request}
        response = await self._send("POST", _wire.status_path(uid), await self._identity(), body)
        return _wire.confirmation(_wire.json_object(response, "authorization status"))

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
