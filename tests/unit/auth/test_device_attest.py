from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.auth.device_attest import (
    TCG_KP_EK_CERTIFICATE,
    EKChainError,
    authn_message,
    load_ek_roots,
    parse_ak,
    unb64,
    verify_ek_chain,
)
from bastion.errors import BadParameter
from bastion.types.devices import DeviceTrustPreference


def test_malformed_inputs_are_one_line_errors() -> None:
    with pytest.raises(BadParameter):
        unb64("***", "x")
    with pytest.raises(BadParameter):
        parse_ak("AAAA")


def test_authn_message_binds_challenge_and_profile() -> None:
    a = authn_message("c", "id1", b"n", {"os_version": "1"})
    assert a != authn_message("c", "id2", b"n", {"os_version": "1"})
    assert a != authn_message("c", "id1", b"n", {"os_version": "2"})


# ---- EK certificate chains (device_trust.ek_ca_bundle) ---------------------------------------

NOW = datetime(2026, 6, 1, tzinfo=UTC)
TPM_ATTRS = x509.Name(
    [
        x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:49465800"),
        x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.2"), "SLB9670"),
        x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:0007003D"),
    ]
)


def _ca(name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    sign_cert, sign_key = issuer or (None, key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(sign_cert.subject if sign_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=365))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(sign_key, hashes.SHA256())
    )
    return cert, key


def _ek_cert(  # type: ignore[no-untyped-def]
    issuer, *, usage: x509.ObjectIdentifier = TCG_KP_EK_CERTIFICATE, days: int = 3650
) -> str:
    """An EK certificate as vendors make them: empty subject, critical SAN directory name of
    TPM attributes, Subject Directory Attributes (unknown to cryptography), the EK usage."""
    ca_cert, ca_key = issuer
    ek = rsa.generate_private_key(65537, 2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(ek.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DirectoryName(TPM_ATTRS)]), True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier("2.5.29.9"),
                bytes.fromhex("3016301406056781050210310b30090c03322e300201000202008a"),
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(False, False, True, False, False, False, False, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_ek_chain_through_an_intermediate_with_tpm_extensions() -> None:
    root = _ca("Vendor TPM Root CA")
    intermediate = _ca("Vendor TPM EK CA 042", root)
    ek = _ek_cert(intermediate)
    # The bundle holds the root and the intermediate (each is an anchor) ...
    roots = load_ek_roots(_pem(root[0]) + _pem(intermediate[0]))
    assert verify_ek_chain(ek, roots, NOW).subject == intermediate[0].subject
    # ... or only the root, the device sending the intermediate.
    only_root = load_ek_roots(_pem(root[0]))
    anchor = verify_ek_chain(ek, only_root, NOW, intermediates=_pem(intermediate[0]))
    assert anchor.subject == root[0].subject
    with pytest.raises(EKChainError, match="no chain"):
        verify_ek_chain(ek, only_root, NOW)


def test_ek_chain_refusals() -> None:
    vendor, other = _ca("Vendor Root"), _ca("Someone Else's Root")
    roots = load_ek_roots(_pem(vendor[0]))
    with pytest.raises(EKChainError, match="no chain"):
        verify_ek_chain(_ek_cert(other), roots, NOW)
    with pytest.raises(EKChainError, match="no chain"):  # expired
        verify_ek_chain(_ek_cert(vendor, days=1), roots, NOW + timedelta(days=2))
    with pytest.raises(EKChainError, match="extended key usage"):  # a TLS client cert
        verify_ek_chain(_ek_cert(vendor, usage=ExtendedKeyUsageOID.CLIENT_AUTH), roots, NOW)
    with pytest.raises(EKChainError, match="not a PEM"):
        verify_ek_chain("junk", roots, NOW)
    with pytest.raises(BadParameter, match="ek_ca_bundle"):
        load_ek_roots("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_ek_ca_bundle_setting_is_pem_or_an_absolute_path() -> None:
    assert DeviceTrustPreference(ek_ca_bundle="/etc/bastion/ek-cas.pem").ek_ca_bundle
    with pytest.raises(ValueError, match="ek_ca_bundle"):
        DeviceTrustPreference(ek_ca_bundle="relative/cas.pem")
