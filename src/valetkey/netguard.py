"""Outbound-request guard against SSRF: refuse URLs whose host resolves to a private address.

Used for every URL a tenant or caller can choose that the broker then calls: issuers'
discovery documents, app webhooks. ``allow_private`` (the ``--allow-private-networks``
setting) lifts the address check for development and tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket

import httpx2
import idna


class OutboundRefused(httpx2.ConnectError):
    """The URL may not be called; the message says why (never includes credentials).

    An ``httpx2.ConnectError``, so code that handles unreachable hosts handles it too.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"refused by the broker's network policy: {message}")


#: RFC 6052 §2.1 well-known NAT64 prefix: the IPv4 address is the last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: RFC 8215 local-use NAT64 prefix: the IPv4 address sits where the operator's prefix
#: length puts it, so it cannot be read back; never public.
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
#: RFC 4380 Teredo: the client's IPv4 address is obfuscated and the server's is a relay;
#: never public.
_TEREDO = ipaddress.IPv6Network("2001::/32")
#: RFC 4291 §2.5.5.1 IPv4-compatible addresses (deprecated): ::a.b.c.d.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, compatible), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:  # RFC 3056 2002::/16
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_is_public(address: str) -> bool:
    """Whether ``address`` is a public unicast address; IPv6 forms embedding IPv4 are judged by it."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0]
    )
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL or ip in _TEREDO:
            return False
        ip = _embedded_ipv4(ip) or ip
    return ip.is_global and not ip.is_multicast and not ip.is_unspecified


_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


def is_noncanonical_ipv4(host: str) -> bool:
    """A host that resolvers read as IPv4 but that is not a plain dotted quad.

    ``0177.0.0.1`` (octal), ``0x7f.1`` (hex), ``2130706433`` (one number), ``127.1`` (short
    form): the WHATWG URL standard and ``inet_aton`` read each as 127.0.0.1, other parsers
    not, so they are refused wherever a URL is accepted. A host whose last label is numeric
    is an IPv4 address or nothing.
    """
    labels = host.removesuffix(".").split(".")
    if ":" in host or not _NUMERIC_LABEL.match(labels[-1]):  # IPv6 literals are judged apart
        return False
    try:
        return str(ipaddress.IPv4Address(host)) != host
    except ValueError:
        return True


def is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_a_labels(host: str) -> None:
    """Raise ``ValueError`` if a label of ``host`` is punycode (``xn--``) that does not decode."""
    for label in host.split("."):
        if label[:4].lower() == "xn--":
            idna.decode(label)  # idna.IDNAError is a UnicodeError, hence a ValueError


async def check_outbound(
    url: str, *, allow_private: bool, allow_loopback_http: bool = False
) -> None:
    """Raise ``OutboundRefused`` unless ``url`` is https (or loopback http when allowed) to a public host."""
    try:
        parsed = httpx2.URL(url)
        raw_host = parsed.raw_host.decode("ascii")
        host = parsed.host  # decodes punycode, but passes invalid punycode through as it is
        _check_a_labels(raw_host)
    except (httpx2.InvalidURL, ValueError) as exc:  # IDNA errors are ValueErrors
        raise OutboundRefused("the URL is invalid") from exc
    if not host or parsed.userinfo:
        raise OutboundRefused("the URL has no host, or carries credentials")
    if is_noncanonical_ipv4(raw_host) or "\\" in url or "%" in raw_host:
        raise OutboundRefused("the URL's host is not in canonical form")
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


class GuardedTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that checks every request's URL with ``check_outbound`` first.

    The broker's one outbound client uses it, so every provider call (token, discovery,
    revocation, device, JWKS of ID tokens), whatever module makes it, is covered. Known gap:
    the host is resolved for the check and again to connect (DNS rebinding is not prevented).
    """

    def __init__(self, inner: httpx2.AsyncBaseTransport, *, allow_private: bool) -> None:
        self._inner = inner
        self._allow_private = allow_private

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await check_outbound(
            str(request.url), allow_private=self._allow_private, allow_loopback_http=True
        )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
