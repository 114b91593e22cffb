"""Authorization-server metadata from an issuer URL: RFC 8414, then OpenID Connect Discovery.

For an issuer ``https://h/tenant`` the two documents live at different places:

- RFC 8414 §3.1 inserts the well-known segment *between* host and path:
  ``https://h/.well-known/oauth-authorization-server/tenant``;
- OpenID Connect Discovery 1.0 §4 *appends* it to the issuer:
  ``https://h/tenant/.well-known/openid-configuration``.

Both are tried in that order; a document whose ``issuer`` is not exactly the configured
one is refused (RFC 8414 §3.3, OIDC Discovery §4.3), never used and never skipped over.
Every URL, the issuer's and each endpoint the document names, must be ``https`` (``http``
for loopback hosts only), fetches are bounded in size and time and do not follow
redirects. :class:`MetadataCache` keeps documents per issuer for a time-to-live.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2

from valetkey.core.clock import Clock
from valetkey.errors import InvalidRequest, ProviderError
from valetkey.netguard import OutboundRefused
from valetkey.providers.config import check_url

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "MAX_DOCUMENT_BYTES",
    "MetadataCache",
    "ServerMetadata",
    "fetch_json",
    "fetch_metadata",
    "well_known_urls",
]

#: Largest discovery document or JWKS read, in bytes.
MAX_DOCUMENT_BYTES = 256 * 1024
#: How long a discovered document is reused before it is fetched again.
DEFAULT_TTL_SECONDS = 3600.0
_TIMEOUT = 10.0
_RFC8414 = "/.well-known/oauth-authorization-server"
_OIDC = "/.well-known/openid-configuration"
#: Metadata members holding endpoint URLs, checked with the same rule as configured URLs.
_ENDPOINTS = (
    "authorization_endpoint",
    "token_endpoint",
    "device_authorization_endpoint",
    "revocation_endpoint",
    "introspection_endpoint",
    "jwks_uri",
    "userinfo_endpoint",
)


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """The members of an authorization server's metadata that Valetkey uses."""

    issuer: str
    #: Where the document came from: ``"oauth"`` (RFC 8414) or ``"openid"`` (OIDC Discovery).
    source: str
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    jwks_uri: str | None = None
    userinfo_endpoint: str | None = None
    #: None when the document does not say (then S256 is still sent).
    code_challenge_methods_supported: tuple[str, ...] | None = None
    id_token_signing_alg_values_supported: tuple[str, ...] | None = None
    grant_types_supported: tuple[str, ...] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_document(cls, issuer: str, source: str, document: Mapping[str, Any]) -> ServerMetadata:
        """Check and read a metadata document fetched for ``issuer``."""
        if document.get("issuer") != issuer:
            raise ProviderError(
                f"the {source} discovery document of {issuer} names another issuer; "
                "it is refused (RFC 8414 §3.3)",
                error="issuer_mismatch",
                issuer=issuer,
            )
        urls: dict[str, str | None] = {}
        for name in _ENDPOINTS:
            value = document.get(name)
            if value is None:
                urls[name] = None
                continue
            if not isinstance(value, str):
                raise _invalid(issuer, f"{name} is not a string")
            try:
                urls[name] = check_url(value, name)
            except InvalidRequest as exc:
                raise _invalid(issuer, exc.message) from exc
        return cls(
            issuer=issuer,
            source=source,
            authorization_endpoint=urls["authorization_endpoint"],
            token_endpoint=urls["token_endpoint"],
            device_authorization_endpoint=urls["device_authorization_endpoint"],
            revocation_endpoint=urls["revocation_endpoint"],
            jwks_uri=urls["jwks_uri"],
            userinfo_endpoint=urls["userinfo_endpoint"],
            code_challenge_methods_supported=_str_list(
                document, "code_challenge_methods_supported", issuer
            ),
            id_token_signing_alg_values_supported=_str_list(
                document, "id_token_signing_alg_values_supported", issuer
            ),
            grant_types_supported=_str_list(document, "grant_types_supported", issuer),
            raw=dict(document),
        )


def _invalid(issuer: str, why: str) -> ProviderError:
    return ProviderError(
        f"the discovery document of {issuer} is invalid: {why}",
        error="invalid_metadata",
        issuer=issuer,
    )


def _str_list(document: Mapping[str, Any], name: str, issuer: str) -> tuple[str, ...] | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(issuer, f"{name} is not a list of strings")
    return tuple(value)


def well_known_urls(issuer: str) -> tuple[str, str]:
    """The RFC 8414 and OpenID Connect discovery URLs of ``issuer``, in the order tried."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, _RFC8414 + path, "", ""))
    openid = urlunsplit((parts.scheme, parts.netloc, path + _OIDC, "", ""))
    return rfc8414, openid


async def fetch_json(
    http: httpx2.AsyncClient, url: str, what: str, *, max_bytes: int = MAX_DOCUMENT_BYTES
) -> tuple[int, dict[str, Any] | None]:
    """GET ``url``; return the status and the JSON object (None if the body is not one).

    Raises :class:`ProviderError` (``timeout``, ``unreachable``, ``response_too_large``).
    """
    body = bytearray()
    try:
        async with asyncio.timeout(_TIMEOUT):
            async with http.stream(
                "GET",
                url,
                headers={"Accept": "application/json"},
                timeout=httpx2.Timeout(_TIMEOUT),
                follow_redirects=False,
            ) as response:
                status = response.status_code
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise _too_large(what, max_bytes)
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        raise _too_large(what, max_bytes)
    except (TimeoutError, httpx2.TimeoutException) as exc:
        raise ProviderError(f"the provider's {what} timed out", error="timeout") from exc
    except OutboundRefused as exc:
        raise ProviderError(f"the provider's {what} URL is {exc}", error="url_refused") from exc
    except (httpx2.InvalidURL, UnicodeError) as exc:  # a URL the client cannot even build
        raise ProviderError(f"the provider's {what} URL is invalid", error="url_refused") from exc
    except httpx2.HTTPError as exc:
        raise ProviderError(
            f"the provider's {what} could not be reached ({type(exc).__name__})",
            error="unreachable",
        ) from exc
    try:
        value = json.loads(bytes(body))
    except (ValueError, UnicodeDecodeError):
        return status, None
    return status, value if isinstance(value, dict) else None


def _too_large(what: str, max_bytes: int) -> ProviderError:
    return ProviderError(
        f"the provider's {what} answered more than {max_bytes} bytes", error="response_too_large"
    )


async def fetch_metadata(http: httpx2.AsyncClient, issuer: str) -> ServerMetadata:
    """Discover ``issuer``: RFC 8414 first, then OpenID Connect; refuse a mismatched issuer."""
    try:
        check_url(issuer, "issuer")
    except InvalidRequest as exc:
        raise ProviderError(exc.message, error="invalid_configuration", field="issuer") from exc
    if urlsplit(issuer).query:
        raise ProviderError(
            "an issuer has no query component (RFC 8414 §2)",
            error="invalid_configuration",
            field="issuer",
        )
    tried: list[str] = []
    for source, url in zip(("oauth", "openid"), well_known_urls(issuer), strict=True):
        status, document = await fetch_json(http, url, "discovery document")
        if status == 200 and document is not None:
            return ServerMetadata.from_document(issuer, source, document)
        tried.append(f"{url} (HTTP {status})")
    raise ProviderError(
        f"no authorization server metadata found for issuer {issuer}; tried {', '.join(tried)}",
        error="discovery_failed",
        issuer=issuer,
    )


@dataclass(slots=True)
class _Entry:
    metadata: ServerMetadata
    fetched_at: float


class MetadataCache:
    """Discovered metadata per issuer URL, reused for ``ttl_seconds``; failures are not kept.

    Concurrent misses for one issuer share a single fetch.
    """

    def __init__(self, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        self.ttl_seconds = ttl_seconds
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, http: httpx2.AsyncClient, clock: Clock, issuer: str) -> ServerMetadata:
        """The issuer's metadata, from the cache while it is fresh."""
        entry = self._fresh(issuer, clock)
        if entry is not None:
            return entry.metadata
        async with self._locks.setdefault(issuer, asyncio.Lock()):
            entry = self._fresh(issuer, clock)
            if entry is not None:
                return entry.metadata
            metadata = await fetch_metadata(http, issuer)
            self._entries[issuer] = _Entry(metadata, clock.timestamp())
            return metadata

    def forget(self, issuer: str | None = None) -> None:
        """Drop one issuer's document, or all."""
        if issuer is None:
            self._entries.clear()
        else:
            self._entries.pop(issuer, None)

    def _fresh(self, issuer: str, clock: Clock) -> _Entry | None:
        entry = self._entries.get(issuer)
        if entry is not None and clock.timestamp() < entry.fetched_at + self.ttl_seconds:
            return entry
        return None
