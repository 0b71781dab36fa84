from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.auth.device_attest import (
    TCG_KP_EK_CERTIFICATE,
    EKChainError,
    IssuerWanted,
    authn_message,
    ca_issuers_uri,
    load_ek_roots,
    load_issuer_certs,
    missing_issuer,
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


# ---- Missing intermediates from the certificates' AIA (device_trust.fetch_ek_intermediates) ---


def _aia_ca(name: str, issuer, uri: str):  # type: ignore[no-untyped-def]
    """An intermediate whose own AIA names where its issuer is published."""
    cert, key = _ca(name, issuer)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(key.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    builder = builder.add_extension(_aia(uri), critical=False)
    return builder.sign(issuer[1], hashes.SHA256()), key


def _aia(*uris: str, method: x509.ObjectIdentifier = AuthorityInformationAccessOID.CA_ISSUERS):  # type: ignore[no-untyped-def]
    return x509.AuthorityInformationAccess(
        [x509.AccessDescription(method, x509.UniformResourceIdentifier(uri)) for uri in uris]
    )


def _leaf(issuer, *uris: str) -> x509.Certificate:  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DirectoryName(TPM_ATTRS)]), True)
    )
    if uris:
        builder = builder.add_extension(_aia(*uris), critical=False)
    return builder.sign(issuer[1], hashes.SHA256())


def test_ca_issuers_uri_takes_the_first_http_one() -> None:
    root = _ca("Vendor Root")
    assert ca_issuers_uri(_leaf(root)) == ""
    assert ca_issuers_uri(_leaf(root, "ldap://x/y", "http://pki.example/ca.crt")) == (
        "http://pki.example/ca.crt"
    )
    assert ca_issuers_uri(_leaf(root, "HTTPS://pki.example/ca.p7b")) == "HTTPS://pki.example/ca.p7b"
    assert ca_issuers_uri(_leaf(root, "file:///etc/passwd", "http://a b/")) == ""
    key = ec.generate_private_key(ec.SECP256R1())
    ocsp = (
        x509.CertificateBuilder()
        .subject_name(root[0].subject)
        .issuer_name(root[0].subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(
            _aia("http://ocsp.example/", method=AuthorityInformationAccessOID.OCSP), False
        )
        .sign(key, hashes.SHA256())
    )
    assert ca_issuers_uri(ocsp) == ""


def test_missing_issuer_walks_up_and_never_asks_for_a_root() -> None:
    root = _ca("Vendor Root")
    mid = _aia_ca("Vendor Intermediate", root, "http://pki.example/root.crt")
    ek_ca = _aia_ca("Vendor EK CA", mid, "http://pki.example/mid.crt")
    leaf = _leaf(ek_ca, "http://pki.example/ekca.crt")
    roots = [root[0]]
    wanted = missing_issuer(leaf, [], roots)
    assert wanted == IssuerWanted(name=ek_ca[0].subject, uri="http://pki.example/ekca.crt")
    wanted = missing_issuer(leaf, [ek_ca[0]], roots)
    assert wanted == IssuerWanted(name=mid[0].subject, uri="http://pki.example/mid.crt")
    # mid's issuer is the configured root: nothing more to fetch (its AIA is not followed).
    assert missing_issuer(leaf, [ek_ca[0], mid[0]], roots) is None
    # The issuer is a configured anchor already, or the top is self-issued (an unconfigured
    # root is never fetched), or there is no URI: nothing to fetch.
    assert missing_issuer(leaf, [], [ek_ca[0]]) is None
    assert missing_issuer(root[0], [], []) is None
    assert missing_issuer(_leaf(ek_ca), [], roots) is None


def test_issuer_loops_end() -> None:
    a_key = ec.generate_private_key(ec.SECP256R1())
    name_a = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "A")])
    name_b = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "B")])

    def cert(subject: x509.Name, issuer: x509.Name) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(a_key.public_key())
            .serial_number(1)
            .not_valid_before(NOW)
            .not_valid_after(NOW + timedelta(days=1))
            .add_extension(_aia("http://loop.example/"), critical=False)
            .sign(a_key, hashes.SHA256())
        )

    a, b = cert(name_a, name_b), cert(name_b, name_a)
    assert missing_issuer(a, [b, a], []) is None


def test_load_issuer_certs_der_pem_pkcs7() -> None:
    root = _ca("Vendor Root")
    mid = _ca("Vendor EK CA", root)
    der = mid[0].public_bytes(serialization.Encoding.DER)
    assert load_issuer_certs(der) == [mid[0]]
    assert load_issuer_certs(_pem(mid[0]).encode()) == [mid[0]]
    for encoding in (serialization.Encoding.DER, serialization.Encoding.PEM):
        bundle = pkcs7.serialize_certificates([mid[0], root[0]], encoding)
        assert set(load_issuer_certs(bundle)) == {mid[0], root[0]}  # a SET: any order
    with pytest.raises(ValueError, match="not a DER, PEM or PKCS#7 certificate"):
        load_issuer_certs(b"<html>404</html>")
    with pytest.raises(ValueError, match="KiB"):
        load_issuer_certs(der * 200)


@given(st.binary(max_size=2048))
@settings(max_examples=300, deadline=None)
def test_load_issuer_certs_never_crashes(data: bytes) -> None:
    for blob in (data, b"-----BEGIN CERTIFICATE-----\n" + data, b"-----BEGIN PKCS7-----\n" + data):
        try:
            certs = load_issuer_certs(blob)
        except ValueError:
            continue
        assert certs and all(isinstance(cert, x509.Certificate) for cert in certs)


_ROOT = _ca("Fuzz Root")
_VALID = [
    _ROOT[0].public_bytes(serialization.Encoding.DER),
    pkcs7.serialize_certificates([_ROOT[0]], serialization.Encoding.DER),
    pkcs7.serialize_certificates([_ROOT[0]], serialization.Encoding.PEM),
]


@given(st.sampled_from(_VALID), st.integers(0, 2000), st.binary(min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_load_issuer_certs_never_crashes_on_damaged_certificates(
    valid: bytes, at: int, junk: bytes
) -> None:
    """Truncated or overwritten certificates and PKCS#7 bundles: a ValueError, or certificates."""
    at %= len(valid)
    for blob in (valid[:at], valid[:at] + junk + valid[at + len(junk) :]):
        try:
            certs = load_issuer_certs(blob)
        except ValueError:
            continue
        assert all(isinstance(cert, x509.Certificate) for cert in certs)


def test_fetched_intermediates_complete_the_chain_but_never_anchor_it() -> None:
    root = _ca("Vendor Root")
    mid = _ca("Vendor EK CA", root)
    ek = _ek_cert(mid)
    only_root = load_ek_roots(_pem(root[0]))
    assert verify_ek_chain(ek, only_root, NOW, fetched=[mid[0]]).subject == root[0].subject
    with pytest.raises(EKChainError, match="no chain"):  # a fetched root is no anchor
        verify_ek_chain(ek, [_ca("Configured Root")[0]], NOW, fetched=[mid[0], root[0]])
