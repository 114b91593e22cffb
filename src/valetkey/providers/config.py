"""Checks shared by providers' ``validate_config``: every refusal names the field.

Each helper raises :class:`~valetkey.errors.InvalidRequest` with ``field`` in its
details, and never puts the refused value in the message (it may be a secret).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx2

from valetkey.core.providers import ValidatedConfig
from valetkey.errors import InvalidRequest
from valetkey.netguard import is_noncanonical_ipv4

__all__ = [
    "LOOPBACK_HOSTS",
    "check_url",
    "optional_secret",
    "optional_str",
    "optional_url",
    "refuse_unknown",
    "require_mapping",
    "require_str",
    "secret_str",
]

#: Hosts for which plain ``http`` is accepted (RFC 8252 §8.3 loopback, and tests).
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_FIELD_LENGTH = 4096


def require_mapping(data: object, what: str = "config") -> Mapping[str, Any]:
    """Return ``data`` if it is a JSON object with string keys."""
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise InvalidRequest(f"{what} must be a JSON object", field=what)
    return data


def refuse_unknown(data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse any field not in ``allowed``, naming the first one (sorted, so stable)."""
    known = set(allowed)
    unknown = sorted(set(data) - known)
    if unknown:
        name = unknown[0]
        near = _nearest(name, known)
        guess = f" (did you mean {near!r}?)" if near else ""
        details: dict[str, Any] = {"field": name, "knownFields": sorted(known)}
        if near:
            details.update(suggestion=near, hint=f"Rename {name!r} to {near!r}.")
        raise InvalidRequest(
            f"unknown configuration field {name!r}{guess}; known fields: {', '.join(sorted(known))}",
            **details,
        )


def _nearest(name: str, known: Iterable[str]) -> str | None:
    """The known field ``name`` most likely means (``tokenURL`` → ``tokenUrl``), if one is close."""
    by_lower = {k.lower(): k for k in known}
    found = difflib.get_close_matches(name[:200].lower(), list(by_lower), n=1, cutoff=0.75)
    return by_lower[found[0]] if found else None


def require_str(data: Mapping[str, Any], name: str, *, max_length: int = MAX_FIELD_LENGTH) -> str:
    """A required non-empty string without control characters."""
    value = optional_str(data, name, max_length=max_length)
    if value is None:
        raise InvalidRequest(f"{name} is required", field=name)
    return value


def optional_str(
    data: Mapping[str, Any], name: str, *, max_length: int = MAX_FIELD_LENGTH
) -> str | None:
    """An optional non-empty string without control characters (None when absent or null)."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{name} must be a non-empty string", field=name)
    if len(value) > max_length:
        raise InvalidRequest(f"{name} is longer than {max_length} characters", field=name)
    if _CONTROL.search(value):
        raise InvalidRequest(f"{name} must not contain control characters", field=name)
    return value


def secret_str(data: Mapping[str, Any], name: str, previous: ValidatedConfig | None) -> str:
    """A required secret string; on update, a payload that leaves it out keeps the stored one."""
    if data.get(name) is None and previous is not None and name in previous.secrets:
        return previous.secrets[name]
    return require_str(data, name)


def optional_secret(
    data: Mapping[str, Any],
    name: str,
    previous: ValidatedConfig | None,
    *,
    max_length: int = MAX_FIELD_LENGTH,
) -> str | None:
    """An optional secret string; on update, a payload that leaves it out keeps the stored one."""
    if name not in data and previous is not None and name in previous.secrets:
        return previous.secrets[name]
    return optional_str(data, name, max_length=max_length)


def optional_url(data: Mapping[str, Any], name: str) -> str | None:
    """An optional URL checked by :func:`check_url` (None when absent or null)."""
    value = optional_str(data, name)
    return None if value is None else check_url(value, name)


def check_url(value: str, name: str) -> str:
    """Accept an absolute ``https`` URL, or ``http`` to a loopback host only.

    Refuses credentials in the URL (``user:pass@``), fragments (RFC 6749 §3.2), ports out
    of 1-65535, and anything URL parsers read differently: backslashes and spaces,
    percent-encoded or non-ASCII hosts (write an internationalized name as its ``xn--``
    A-label), invalid punycode, and IPv4 hosts that are not a plain dotted quad
    (``0177.0.0.1``, ``0x7f.1``, ``2130706433``, ``127.1``).
    """
    if "\\" in value or any(c.isspace() for c in value):
        raise InvalidRequest(f"{name} must not contain backslashes or spaces", field=name)
    try:
        parts = urlsplit(value)
        host = parts.hostname
        port = parts.port  # raises ValueError on a malformed or out-of-range port
    except ValueError as exc:
        raise InvalidRequest(f"{name} is not a valid URL", field=name) from exc
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidRequest(f"{name} must be an absolute https URL", field=name)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidRequest(f"{name} must not carry credentials", field=name)
    if parts.fragment or value.endswith("#"):
        raise InvalidRequest(f"{name} must not have a fragment", field=name)
    if port == 0:
        raise InvalidRequest(f"{name} has port 0", field=name)
    _check_host(host, name)
    try:
        # The client's own parser must read the same host: no parser differential.
        same = httpx2.URL(value).raw_host.decode("ascii").lower() == host
    except (httpx2.InvalidURL, ValueError) as exc:
        raise InvalidRequest(f"{name} is not a valid URL", field=name) from exc
    if not same:
        raise InvalidRequest(f"{name} is not a valid URL", field=name)
    if parts.scheme == "http" and not _is_loopback(host):
        raise InvalidRequest(
            f"{name} must use https (http is accepted only for localhost, 127.0.0.1 and [::1])",
            field=name,
        )
    return value


def _check_host(host: str, name: str) -> None:
    if not host.isascii():
        raise InvalidRequest(
            f"{name} has a non-ASCII host: write an internationalized name as its xn-- form",
            field=name,
        )
    if "%" in host:
        raise InvalidRequest(f"{name} has a percent-encoded host", field=name)
    if ":" in host:  # an IPv6 literal
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise InvalidRequest(f"{name} has an invalid IPv6 host", field=name) from exc
        return
    for label in host.split("."):
        if label.startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError as exc:
                raise InvalidRequest(f"{name} has an invalid punycode host", field=name) from exc
    if is_noncanonical_ipv4(host):
        raise InvalidRequest(
            f"{name} has a numeric host that is not a dotted-quad IPv4 address", field=name
        )


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host) in (
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
        )
    except ValueError:
        return False
