"""Outbound-request guard against SSRF: refuse URLs whose host resolves to a private address.

Used for every URL a tenant or caller can choose that the broker then calls: issuers'
discovery documents, app webhooks. ``allow_private`` (the ``--allow-private-networks``
setting) lifts the address check for development and tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx


class OutboundRefused(httpx.ConnectError):
    """The URL may not be called; the message says why (never includes credentials).

    An ``httpx.ConnectError``, so code that handles unreachable hosts handles it too.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"refused by the broker's network policy: {message}")


def address_is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast and not ip.is_unspecified


def is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def check_outbound(
    url: str, *, allow_private: bool, allow_loopback_http: bool = False
) -> None:
    """Raise ``OutboundRefused`` unless ``url`` is https (or loopback http when allowed) to a public host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise OutboundRefused("the URL is invalid") from exc
    host = parsed.host
    if not host or parsed.userinfo:
        raise OutboundRefused("the URL has no host, or carries credentials")
    loopback_http = (
        parsed.scheme == "http" and allow_loopback_http and allow_private and is_loopback_host(host)
    )
    if parsed.scheme != "https" and not loopback_http:
        raise OutboundRefused("the URL must be https")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parsed.port or 443, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise OutboundRefused(f"cannot resolve {host}") from exc
    addresses = {str(info[4][0]) for info in infos}
    if not addresses or not all(address_is_public(a) for a in addresses):
        raise OutboundRefused(f"{host} resolves to a private or local address")


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks every request's URL with ``check_outbound`` first.

    The broker's one outbound client uses it, so every provider call (token, discovery,
    revocation, device, JWKS of ID tokens), whatever module makes it, is covered. Known gap:
    the host is resolved for the check and again to connect (DNS rebinding is not prevented).
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, *, allow_private: bool) -> None:
        self._inner = inner
        self._allow_private = allow_private

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await check_outbound(
            str(request.url), allow_private=self._allow_private, allow_loopback_http=True
        )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
