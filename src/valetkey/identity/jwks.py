"""Remote issuers' signing keys, from their OIDC discovery document and JWKS.

Keys are fetched over HTTPS, checked, cached for ``ttl_seconds``, and refetched
when a token names an unknown ``kid`` — at most once per ``cooldown_seconds``
per issuer, and concurrent misses share one fetch. Every fetch is bounded (size,
total time, no redirects) and refused toward private, loopback or link-local
addresses unless ``allow_private_addresses`` is set (SSRF, DESIGN §9).
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any

import httpx2
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key, KeySet, RSAKey

from valetkey.core.clock import Clock
from valetkey.identity.errors import IssuerUnreachable, UnknownKey
from valetkey.netguard import address_is_public, is_loopback_host, is_noncanonical_ipv4

__all__ = ["DISCOVERY_PATH", "JwksCache", "discovery_url"]

DISCOVERY_PATH = "/.well-known/openid-configuration"
_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
_MAX_KEYS = 100
_MIN_RSA_BITS = 2048


def discovery_url(issuer: str) -> str:
    """OIDC discovery: the well-known path is appended to the issuer, path included."""
    return issuer.rstrip("/") + DISCOVERY_PATH


@dataclass(slots=True)
class _Entry:
    keys: KeySet | None = None
    fetched_at: float = float("-inf")  # last successful fetch
    attempted_at: float = float("-inf")  # last fetch, successful or not
    #: Last refetch caused by an unknown kid. Routine fetches do not count, so a key rotated
    #: just after a routine fetch is still picked up at once.
    kid_refetch_at: float = float("-inf")
    failure: IssuerUnreachable | None = None
    generation: int = 0


class JwksCache:
    """Signing keys of external OIDC issuers, fetched on demand and cached."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        clock: Clock,
        *,
        cooldown_seconds: float = 60,
        ttl_seconds: float = 3600,
        allow_private_addresses: bool = False,
        max_response_bytes: int = 256 * 1024,
        timeout_seconds: float = 5.0,
        failure_backoff_seconds: float = 5.0,
    ) -> None:
        self._http = http
        self._clock = clock
        self.cooldown_seconds = cooldown_seconds
        self.ttl_seconds = ttl_seconds
        self.allow_private_addresses = allow_private_addresses
        self.max_response_bytes = max_response_bytes
        self.timeout_seconds = timeout_seconds
        self.failure_backoff_seconds = failure_backoff_seconds
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def key_set(self, issuer: str) -> KeySet:
        """The issuer's current keys, from the cache while it is fresh."""
        entry = self._entries.get(issuer)
        now = self._clock.timestamp()
        if (
            entry is not None
            and entry.keys is not None
            and now < entry.fetched_at + self.ttl_seconds
        ):
            return entry.keys
        return await self._refresh(issuer, entry.generation if entry else 0)

    async def find_key(self, issuer: str, kid: str) -> Key:
        """The issuer's key ``kid``; an unknown kid refetches once per cooldown."""
        keys = await self.key_set(issuer)
        key = _by_kid(keys, kid)
        if key is not None:
            return key
        entry = self._entries[issuer]
        in_flight = self._lock(issuer).locked()  # a fetch is running: wait for it, share it
        now = self._clock.timestamp()
        if in_flight or now >= entry.kid_refetch_at + self.cooldown_seconds:
            if not in_flight:
                entry.kid_refetch_at = now
            keys = await self._refresh(issuer, entry.generation)
            key = _by_kid(keys, kid)
            if key is not None:
                return key
        raise UnknownKey(
            f"issuer {issuer} publishes no key with kid {kid!r}", issuer=issuer, kid=kid
        )

    def forget(self, issuer: str | None = None) -> None:
        """Drop cached keys for one issuer, or all."""
        if issuer is None:
            self._entries.clear()
        else:
            self._entries.pop(issuer, None)

    def _lock(self, issuer: str) -> asyncio.Lock:
        return self._locks.setdefault(issuer, asyncio.Lock())

    async def _refresh(self, issuer: str, seen_generation: int) -> KeySet:
        """Fetch under the issuer's lock; callers that waited share the result."""
        async with self._lock(issuer):
            entry = self._entries.setdefault(issuer, _Entry())
            now = self._clock.timestamp()
            shared = entry.generation != seen_generation  # a fetch completed while we waited
            backing_off = entry.failure is not None and now < (
                entry.attempted_at + self.failure_backoff_seconds
            )
            if not (shared or backing_off):
                entry.attempted_at = now
                try:
                    keys = await self._fetch(issuer)
                except IssuerUnreachable as exc:
                    entry.failure = exc
                    raise
                finally:
                    entry.generation += 1
                entry.keys, entry.fetched_at, entry.failure = keys, now, None
                return keys
            if entry.failure is not None or entry.keys is None:  # None: that fetch was cancelled
                message = entry.failure.message if entry.failure else f"issuer {issuer}: no keys"
                raise IssuerUnreachable(message, issuer=issuer)
            return entry.keys

    async def _fetch(self, issuer: str) -> KeySet:
        await self._check_url(issuer, issuer)
        document = await self._get_json(discovery_url(issuer), issuer)
        if document.get("issuer") != issuer:
            raise IssuerUnreachable(
                f"the discovery document of {issuer} names another issuer", issuer=issuer
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IssuerUnreachable(
                f"the discovery document of {issuer} has no jwks_uri", issuer=issuer
            )
        await self._check_url(jwks_uri, issuer)
        return _parse_jwks(await self._get_json(jwks_uri, issuer), issuer)

    async def _check_url(self, url: str, issuer: str) -> None:
        try:
            parsed = httpx2.URL(url)
            host = parsed.host  # decodes punycode: IDNA errors are ValueErrors
        except (httpx2.InvalidURL, ValueError) as exc:
            raise IssuerUnreachable(
                f"the URL for issuer {issuer} is invalid", issuer=issuer
            ) from exc
        if is_noncanonical_ipv4(parsed.raw_host.decode("ascii")) or "\\" in url:
            raise IssuerUnreachable(f"the URL for issuer {issuer} is not allowed", issuer=issuer)
        if not host or parsed.userinfo or parsed.fragment:
            raise IssuerUnreachable(f"the URL for issuer {issuer} is not allowed", issuer=issuer)
        loopback_http = (
            parsed.scheme == "http" and self.allow_private_addresses and is_loopback_host(host)
        )
        if parsed.scheme != "https" and not loopback_http:
            raise IssuerUnreachable(f"issuer {issuer} must be served over https", issuer=issuer)
        if self.allow_private_addresses:
            return
        port = parsed.port or 443
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise IssuerUnreachable(
                f"cannot resolve the host of issuer {issuer}", issuer=issuer
            ) from exc
        addresses = {str(info[4][0]) for info in infos}
        if not addresses or not all(address_is_public(a) for a in addresses):
            raise IssuerUnreachable(
                f"the host of issuer {issuer} resolves to a private or local address", issuer=issuer
            )

    async def _get_json(self, url: str, issuer: str) -> dict[str, Any]:
        body = bytearray()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                async with self._http.stream(
                    "GET",
                    url,
                    headers={"Accept": "application/json"},
                    timeout=self.timeout_seconds,
                    follow_redirects=False,
                ) as response:
                    if response.status_code != 200:
                        raise IssuerUnreachable(
                            f"issuer {issuer} answered HTTP {response.status_code} for {url}",
                            issuer=issuer,
                        )
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
                        raise _too_large(issuer, url)
                    async for chunk in response.aiter_bytes():
                        body.extend(chunk)
                        if len(body) > self.max_response_bytes:
                            raise _too_large(issuer, url)
        except TimeoutError as exc:
            raise IssuerUnreachable(f"issuer {issuer} timed out for {url}", issuer=issuer) from exc
        except httpx2.HTTPError as exc:
            raise IssuerUnreachable(
                f"issuer {issuer} could not be reached at {url}", issuer=issuer
            ) from exc
        try:
            value = json.loads(bytes(body))
        except ValueError as exc:
            raise IssuerUnreachable(
                f"issuer {issuer} sent invalid JSON at {url}", issuer=issuer
            ) from exc
        if not isinstance(value, dict):
            raise IssuerUnreachable(f"issuer {issuer} sent a non-object at {url}", issuer=issuer)
        return value


def _too_large(issuer: str, url: str) -> IssuerUnreachable:
    return IssuerUnreachable(f"issuer {issuer} sent too large a response at {url}", issuer=issuer)


def _by_kid(keys: KeySet, kid: str) -> Key | None:
    for key in keys:
        if key.kid == kid:
            return key
    return None


def _parse_jwks(document: dict[str, Any], issuer: str) -> KeySet:
    items = document.get("keys")
    if not isinstance(items, list):
        raise IssuerUnreachable(f"the JWKS of issuer {issuer} has no key list", issuer=issuer)
    keys: list[Key] = []
    for item in items[:_MAX_KEYS]:
        # Public signing keys only: never a symmetric key, never an encryption key.
        if not isinstance(item, dict) or item.get("kty") not in _KEY_TYPES:
            continue
        if item.get("use") not in (None, "sig") or "d" in item:
            continue
        kid = item.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            key = JWKRegistry.import_key(item)
        except (JoseError, ValueError, TypeError):
            continue
        if isinstance(key, RSAKey) and key.public_key.key_size < _MIN_RSA_BITS:
            continue
        keys.append(key)
    if not keys:
        raise IssuerUnreachable(
            f"the JWKS of issuer {issuer} has no usable signing key", issuer=issuer
        )
    return KeySet(keys)
