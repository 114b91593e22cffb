"""Provider URLs that parsers read differently are refused at configuration, naming the field,
and by the outbound guard at request time if one gets through."""

from __future__ import annotations

import httpx2
import pytest

from valetkey.errors import InvalidRequest, ProviderError
from valetkey.netguard import OutboundRefused, check_outbound, is_noncanonical_ipv4
from valetkey.providers.oauth import OAuthProvider
from valetkey.providers.oauth.client import ClientAuth, request_token

BAD_URLS = [
    "https://0177.0.0.1/token",  # octal
    "https://0x7f.1/token",  # hex, short
    "https://0x7f000001/token",
    "https://2130706433/token",  # one number
    "https://127.1/token",  # short form
    "https://0177.1/token",
    "https://8.8.8.08/token",
    "https://example.123/token",  # a numeric last label is an IPv4 address or nothing
    "https://bücher.example/token",  # IDN: write it as xn--bcher-kva.example
    "https://xn--zz.example/token",  # invalid punycode
    "https://user@example.com/token",
    "https://user:pw@example.com/token",
    "https://@example.com/token",
    "https://example.com:70000/token",
    "https://example.com:0/token",
    "https://example.com:-1/token",
    "https:///token",
    "https://:443/token",
    "https://evil.example\\@good.example/token",
    "https://good.example\\evil/token",
    "https://exa mple.com/token",
    "https://127%2e0%2e0%2e1/token",
    "https://[::1/token",
    "https://[fe80::1%25eth0]/token",
    "ftp://example.com/token",
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("field", ["tokenUrl", "revocationUrl", "issuer"])
def test_a_bad_provider_url_is_refused_naming_the_field(url: str, field: str) -> None:
    """Each non-canonical or ambiguous URL form is an invalid_request that names the field."""
    data = {"tokenUrl": "https://idp.example/token", "clientId": "c", "clientSecret": "s" * 12}
    data[field] = url
    with pytest.raises(InvalidRequest) as caught:
        OAuthProvider().validate_config(data)
    assert caught.value.details["field"] == field
    assert caught.value.code == "invalid_request"


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example/token",
        "https://IdP.Example/token",
        "https://xn--bcher-kva.example/token",
        "https://1.2.3.4/token",
        "https://[2001:db8::1]:8443/token",
        "https://idp.example:443/oauth/token?tenant=a",
        "http://127.0.0.1:8080/token",
        "http://localhost/token",
    ],
)
def test_ordinary_urls_are_accepted(url: str) -> None:
    """Canonical hosts (names, A-labels, dotted quads, IPv6, loopback http) stay accepted."""
    data = {"tokenUrl": url, "clientId": "c", "clientSecret": "s" * 12}
    assert OAuthProvider().validate_config(data).config["tokenUrl"] == url


@pytest.mark.parametrize(
    ("host", "noncanonical"),
    [
        ("0177.0.0.1", True),
        ("0x7f.1", True),
        ("2130706433", True),
        ("127.1", True),
        ("127.0.0.1", False),
        ("1password.com", False),
        ("example.com", False),
        ("0x.example", False),
        ("::127.0.0.1", False),
    ],
)
def test_noncanonical_ipv4_hosts_are_recognized(host: str, noncanonical: bool) -> None:
    """Octal, hex, single-number and short IPv4 forms are recognized; names are not."""
    assert is_noncanonical_ipv4(host) is noncanonical


@pytest.mark.parametrize(
    "url",
    [
        "https://0x7f.1/token",
        "https://2130706433/token",
        "https://127.1/token",
        "https://0177.0.0.1/token",
        "https://xn--zz.example/token",
        "https://api.xn--zz.example/token",  # bad punycode in any label, any case
        "https://XN--ZZ.example/token",
        "https://xn--.example/token",
    ],
)
async def test_the_outbound_guard_refuses_them_at_request_time(url: str) -> None:
    """A URL that got past configuration (stored before this check existed) is still refused."""
    with pytest.raises(OutboundRefused):
        await check_outbound(url, allow_private=True)


@pytest.mark.parametrize(
    "url", ["https://0177.0.0.1/token", "https://xn--zz.example/token", "https://0x7f.1/token"]
)
async def test_a_token_call_to_such_a_url_is_a_provider_error(url: str) -> None:
    """Through the broker's guarded client, the call ends in a typed url_refused, not a crash."""
    from valetkey.netguard import GuardedTransport

    transport = GuardedTransport(httpx2.AsyncHTTPTransport(), allow_private=True)
    async with httpx2.AsyncClient(transport=transport) as http:
        with pytest.raises(ProviderError) as caught:
            await request_token(http, url, ClientAuth("c", "secret-0123"), {"grant_type": "x"})
    assert caught.value.details["error"] == "url_refused"
