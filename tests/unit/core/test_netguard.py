"""The outbound guard judges IPv6 addresses that embed an IPv4 address by that IPv4 address."""

from __future__ import annotations

import ipaddress

import pytest

from valetkey.netguard import OutboundRefused, address_is_public, check_outbound

#: (name, IPv4 address, public?)
IPV4 = [
    ("loopback", "127.0.0.1", False),
    ("ten", "10.1.2.3", False),
    ("metadata", "169.254.169.254", False),
    ("home", "192.168.1.10", False),
    ("cgnat", "100.64.0.1", False),
    ("public", "8.8.8.8", True),
]


def _nat64(v4: str) -> str:
    return str(
        ipaddress.IPv6Address(
            int(ipaddress.IPv6Address("64:ff9b::")) | int(ipaddress.IPv4Address(v4))
        )
    )


def _sixtofour(v4: str) -> str:
    return str(ipaddress.IPv6Address((0x2002 << 112) | (int(ipaddress.IPv4Address(v4)) << 80) | 1))


FORMS = {
    "ipv4-mapped": lambda v4: f"::ffff:{v4}",
    "ipv4-compatible": lambda v4: f"::{v4}",
    "nat64": _nat64,
    "6to4": _sixtofour,
}


@pytest.mark.parametrize(("name", "v4", "public"), IPV4)
@pytest.mark.parametrize("form", sorted(FORMS))
def test_an_embedded_ipv4_address_decides(form: str, name: str, v4: str, public: bool) -> None:
    """Mapped, compatible, NAT64 and 6to4 forms are as public as the IPv4 address they carry."""
    address = FORMS[form](v4)
    assert address_is_public(v4) is public
    assert address_is_public(address) is public, address


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b:1::a00:1",  # RFC 8215 local-use NAT64
        "64:ff9b:1:ffff::808:808",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001::1",
        "::",
        "::1",
        "fe80::1%eth0",
        "fc00::1",
    ],
)
def test_forms_that_cannot_be_judged_are_not_public(address: str) -> None:
    """Local-use NAT64 and Teredo hide where they lead: never public, like loopback and ULA."""
    assert address_is_public(address) is False


@pytest.mark.parametrize("address", ["2606:4700:4700::1111", "2001:4860:4860::8888"])
def test_ordinary_public_ipv6_stays_allowed(address: str) -> None:
    """Public IPv6 outside the embedding prefixes is still public (2001:4860:: is not Teredo)."""
    assert address_is_public(address) is True


@pytest.mark.parametrize(
    "url",
    [
        "https://[64:ff9b::7f00:1]/token",
        "https://[64:ff9b::a9fe:a9fe]/latest/meta-data",
        "https://[2002:a00:1::1]/token",
        "https://[::127.0.0.1]/token",
        "https://[::ffff:192.168.0.1]/token",
        "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/token",
    ],
)
async def test_the_guard_refuses_urls_to_embedded_private_addresses(url: str) -> None:
    """A URL whose host is such an address is refused before any connection."""
    with pytest.raises(OutboundRefused, match="private or local"):
        await check_outbound(url, allow_private=False)
