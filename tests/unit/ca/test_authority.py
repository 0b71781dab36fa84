"""Tests for bastion.ca.authority: CA resources, signing keys, trust anchors and export."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import bastion.ca
from bastion.ca.authority import (
    ca_name,
    export_trust,
    new_cert_authority,
    new_keypair,
    signing_key,
    trusted_certificates,
    trusted_public_keys,
)
from bastion.ca.keys import key_id, public_key_to_openssh
from bastion.ca.rotation import next_phase
from bastion.ca.x509 import issue_user_certificate, verify_certificate_chain
from bastion.clock import FakeClock
from bastion.errors import AccessDenied, BadParameter
from bastion.types.authority import CA_TYPES, CAType, CertAuthority, KeyAlgorithm
from bastion.types.identity import Identity

KEK = b"\x01" * 32
START = datetime(2026, 1, 1, tzinfo=UTC)
ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ed25519", "ecdsa-p256", "rsa-3072")


def make(ca_type: CAType, algorithm: KeyAlgorithm = "ed25519") -> CertAuthority:
    return new_cert_authority(ca_type, "example", algorithm, KEK, FakeClock(START))


def test_package_exports_match_all() -> None:
    exported = {name for name in dir(bastion.ca) if not name.startswith("_")}
    modules = {"authority", "db", "jwt", "keys", "krl", "rotation", "sshcert", "x509"}
    assert exported - modules == set(bastion.ca.__all__)
    for name in bastion.ca.__all__:
        assert getattr(bastion.ca, name) is not None


@pytest.mark.parametrize("ca_type", CA_TYPES)
def test_new_cert_authority(ca_type: CAType) -> None:
    ca = make(ca_type)
    assert ca.name == ca_name(ca_type, "example")
    assert ca.spec.type == ca_type and ca.spec.cluster == "example"
    assert ca.spec.rotation.phase == "standby"
    (pair,) = ca.spec.active_keys
    assert pair.created == START
    key = signing_key(ca, KEK)
    assert trusted_public_keys(ca) == [key.public_key()]
    assert pair.id == key_id(key.public_key())
    if ca_type.startswith("ssh_"):
        assert pair.public_key.startswith("ssh-ed25519 ")
        assert pair.cert_pem == ""
    else:
        assert pair.public_key.startswith("-----BEGIN PUBLIC KEY-----")
    if ca_type in ("tls_user", "tls_host", "db"):
        (cert,) = trusted_certificates(ca)
        assert cert.public_key() == key.public_key()
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert ca_type in cert.subject.rfc4514_string()
    else:
        with pytest.raises(BadParameter, match="no X.509 certificates"):
            trusted_certificates(ca)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithms(algorithm: KeyAlgorithm) -> None:
    ca = make("tls_user", algorithm)
    assert ca.spec.active_keys[0].algorithm == algorithm
    identity = Identity(
        cluster="example", user="bob", logins=("bob",), expires=START + timedelta(hours=1)
    )
    leaf = issue_user_certificate(
        trusted_certificates(ca)[0],
        signing_key(ca, KEK),
        ed25519.Ed25519PrivateKey.generate().public_key(),
        identity,
        not_before=START,
    )
    assert verify_certificate_chain(leaf, trusted_certificates(ca), START) == identity
    # a certificate from the db CA of the same cluster is refused by the tls_user anchors
    db = make("db", algorithm)
    db_leaf = issue_user_certificate(
        trusted_certificates(db)[0],
        signing_key(db, KEK),
        ed25519.Ed25519PrivateKey.generate().public_key(),
        identity,
        not_before=START,
    )
    with pytest.raises(AccessDenied, match="unknown CA"):
        verify_certificate_chain(db_leaf, trusted_certificates(ca), START)


def test_signing_key_refusals() -> None:
    ca = make("ssh_user")
    with pytest.raises(BadParameter, match="wrong key-encryption key"):
        signing_key(ca, b"\x02" * 32)
    with pytest.raises(BadParameter, match="without secrets"):
        signing_key(ca.without_secrets(), KEK)
    # a sealed key moved from the user CA into the host CA record does not decrypt
    host = make("ssh_host")
    moved = host.spec.active_keys[0].model_copy(
        update={
            "id": ca.spec.active_keys[0].id,
            "private_key_encrypted": ca.spec.active_keys[0].private_key_encrypted,
        }
    )
    hijacked = host.model_copy(
        update={"spec": host.spec.model_copy(update={"active_keys": [moved]})}
    )
    with pytest.raises(BadParameter, match="cannot decrypt CA key"):
        signing_key(hijacked, KEK)
    empty = ca.model_copy(update={"spec": ca.spec.model_copy(update={"active_keys": []})})
    with pytest.raises(BadParameter, match="no active key"):
        signing_key(empty, KEK)


def test_export_ssh_user_for_sshd() -> None:
    ca = make("ssh_user")
    text = export_trust(ca)
    key = signing_key(ca, KEK).public_key()
    assert text.splitlines() == [public_key_to_openssh(key, "type=ssh_user cluster=example")]
    assert export_trust(ca, "authorized_keys").startswith("cert-authority ssh-ed25519 ")
    with pytest.raises(BadParameter, match="use openssh, authorized_keys"):
        export_trust(ca, "pem")


def test_export_pem_includes_additional_trusted_during_rotation() -> None:
    ca = make("tls_host")
    rotated = next_phase(
        ca, "init", new_keypair("tls_host", "example", "ed25519", KEK, START), START
    )
    certs = x509.load_pem_x509_certificates(export_trust(rotated).encode())
    assert [c.public_key() for c in certs] == trusted_public_keys(rotated)
    assert len(certs) == 2


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_export_jwks(algorithm: KeyAlgorithm) -> None:
    ca = make("jwt", algorithm)
    (jwk,) = json.loads(export_trust(ca))["keys"]
    public = signing_key(ca, KEK).public_key()
    assert jwk["kid"] == ca.spec.active_keys[0].id
    assert jwk["use"] == "sig"

    def unb64(value: str) -> bytes:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))

    if isinstance(public, ed25519.Ed25519PublicKey):
        assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert unb64(jwk["x"]) == raw
    elif isinstance(public, ec.EllipticCurvePublicKey):
        assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
        rebuilt = ec.EllipticCurvePublicNumbers(
            int.from_bytes(unb64(jwk["x"]), "big"),
            int.from_bytes(unb64(jwk["y"]), "big"),
            ec.SECP256R1(),
        ).public_key()
        assert rebuilt == public
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        assert (jwk["kty"], jwk["alg"]) == ("RSA", "RS256")
        numbers = public.public_numbers()
        assert int.from_bytes(unb64(jwk["n"]), "big") == numbers.n
        assert int.from_bytes(unb64(jwk["e"]), "big") == numbers.e
    assert export_trust(ca, "pem").startswith("-----BEGIN PUBLIC KEY-----")


def test_bad_inputs() -> None:
    with pytest.raises(BadParameter, match="unknown CA type"):
        new_keypair("ssh_admin", "example", "ed25519", KEK, START)  # type: ignore[arg-type]
    with pytest.raises(BadParameter, match="invalid cluster name"):
        new_cert_authority("jwt", "bad cluster", "ed25519", KEK, FakeClock(START))
    with pytest.raises(BadParameter, match="32 bytes"):
        new_cert_authority("jwt", "example", "ed25519", b"short", FakeClock(START))
