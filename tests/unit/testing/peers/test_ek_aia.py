from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bastion.auth.device_attest import ca_issuers_uri
from bastion.testing.peers.ek_aia import add_aia


def test_add_aia_keeps_the_certificate_and_its_issuer() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    ca_key = rsa.generate_private_key(65537, 2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swtpm-localca")])
    ek = rsa.generate_private_key(65537, 2048)
    original = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_name)
        .public_key(ek.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = ca_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = add_aia(original.public_bytes(serialization.Encoding.DER), key_pem, "http://x/ca.crt")
    cert = x509.load_der_x509_certificate(der)
    assert ca_issuers_uri(cert) == "http://x/ca.crt"
    assert cert.serial_number == 7 and cert.issuer == ca_name
    assert cert.public_key() == ek.public_key()
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).critical
    cert.verify_directly_issued_by(_self_signed(ca_key, ca_name, now))  # re-signed by the CA


def _self_signed(key: rsa.RSAPrivateKey, name: x509.Name, now: datetime) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
