"""Tests for bastion.ca.db: database server and client certificates from the db CA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.ca.db import issue_db_client_certificate, issue_db_server_certificate
from bastion.ca.x509 import self_signed_ca
from bastion.errors import BadParameter

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return self_signed_ca(key, "test db CA", "test.local", timedelta(days=30), now=NOW), key


def test_client_certificate_names_the_db_user(ca) -> None:  # type: ignore[no-untyped-def]
    cert_ca, key = ca
    subject = ec.generate_private_key(ec.SECP256R1()).public_key()
    cert = issue_db_client_certificate(
        cert_ca, key, subject, "alice_db", NOW, NOW + timedelta(hours=1)
    )
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert (cn, org) == ("alice_db", "test.local")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.issuer == cert_ca.subject
    cert.verify_directly_issued_by(cert_ca)


@pytest.mark.parametrize("user", ["", "x" * 64, "a\x00b"])
def test_client_certificate_refuses_bad_users(ca, user: str) -> None:  # type: ignore[no-untyped-def]
    cert_ca, key = ca
    subject = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(BadParameter):
        issue_db_client_certificate(cert_ca, key, subject, user, NOW, NOW + timedelta(hours=1))


def test_server_certificate_sans(ca) -> None:  # type: ignore[no-untyped-def]
    cert_ca, key = ca
    subject = ec.generate_private_key(ec.SECP256R1()).public_key()
    cert = issue_db_server_certificate(
        cert_ca, key, subject, "db.internal", ["db"], ["127.0.0.1"], NOW, NOW + timedelta(days=1)
    )
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["db.internal", "db"]
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    with pytest.raises(BadParameter, match="outlive"):
        issue_db_server_certificate(
            cert_ca, key, subject, "db", [], [], NOW, NOW + timedelta(days=365)
        )
