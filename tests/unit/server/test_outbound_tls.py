"""The broker's outbound TLS trusts certifi's CAs plus the configured file, whatever the host has."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from valetkey.server.broker import outbound_tls


def _certifi_count() -> int:
    return len(ssl.create_default_context(cafile=certifi.where()).get_ca_certs())


def test_without_a_ca_file_it_is_certifi_and_ignores_ssl_cert_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``SSL_CERT_FILE`` (which httpx2's default context would read) changes nothing."""
    empty = tmp_path / "none.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    context = outbound_tls(None)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == _certifi_count() > 0


def test_a_ca_file_adds_to_certifi(tmp_path: Path) -> None:
    """``--ca-file`` adds its certificates (a private CA); the public CAs stay trusted."""
    extra = tmp_path / "private-ca.pem"
    extra.write_bytes(_private_ca())
    context = outbound_tls(extra)
    subjects = [dict(x[0] for x in c["subject"]) for c in context.get_ca_certs()]
    assert len(subjects) == _certifi_count() + 1
    assert {"commonName": "Valetkey test private CA"} in subjects


def test_an_unreadable_ca_file_is_an_error_not_a_silent_fallback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ssl.SSLError):
        outbound_tls(bad)


def _private_ca() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Valetkey test private CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)
