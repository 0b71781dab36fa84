"""Tests for bastion.ca.x509: identity round trips, every refusal, purpose separation, openssl."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.ca.keys import PrivateKey, generate_private_key
from bastion.ca.x509 import (
    IDENTITY_EXTENSION_OID,
    VerifiedLeafCache,
    identity_from_certificate,
    issue_host_certificate,
    issue_user_certificate,
    self_signed_ca,
    verify_certificate_chain,
    verify_leaf,
)
from bastion.clock import FakeClock
from bastion.errors import AccessDenied, BadParameter
from bastion.types.authority import KeyAlgorithm
from bastion.types.identity import IDENTITY_OID, Identity, RouteToTarget

ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ed25519", "ecdsa-p256", "rsa-3072")
START = datetime(2026, 1, 1, tzinfo=UTC)


@functools.cache
def key(algorithm: KeyAlgorithm, name: str) -> PrivateKey:
    return generate_private_key(algorithm)


@functools.cache
def ca(algorithm: KeyAlgorithm, purpose: str, cluster: str = "example") -> x509.Certificate:
    return self_signed_ca(
        key(algorithm, purpose + cluster),
        f"{cluster} {purpose} CA",
        cluster,
        timedelta(days=365),
        now=START,
    )


def make_identity(**overrides: object) -> Identity:
    fields: dict[str, object] = {
        "cluster": "example",
        "user": "alice",
        "roles": ("dev",),
        "traits": {"team": ("blue", "red")},
        "logins": ("alice",),
        "expires": START + timedelta(hours=12),
        "route": RouteToTarget(db_service="pg", db_user="alice"),
        "mfa_verified": True,
        "mfa_scope": "node-1",
        "access_requests": ("req-1",),
    }
    fields.update(overrides)
    return Identity.model_validate(fields)


def user_cert(alg: KeyAlgorithm = "ed25519", **overrides: object) -> x509.Certificate:
    return issue_user_certificate(
        ca(alg, "tls_user"),
        key(alg, "tls_userexample"),
        key(alg, "subject").public_key(),
        make_identity(**overrides),
        not_before=START,
    )


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_identity_round_trip(alg: KeyAlgorithm) -> None:
    identity = make_identity()
    cert = user_cert(alg)
    clock = FakeClock(START + timedelta(minutes=1))
    assert verify_certificate_chain(cert, [ca(alg, "tls_user")], clock.now()) == identity
    assert identity_from_certificate(cert) == identity
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "example"
    ext = cert.extensions.get_extension_for_oid(IDENTITY_EXTENSION_OID)
    assert not ext.critical
    assert IDENTITY_OID == ext.oid.dotted_string
    assert cert.not_valid_after_utc == identity.expires
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_a_user_name_longer_than_a_common_name_round_trips() -> None:
    """An SSO user ``okta:firstname.lastname@...`` can pass X.509's 64-character CN bound: the
    CN is cut, the identity extension keeps the whole name, and verification accepts it."""
    name = "okta:" + "a" * 60 + "@example.com"
    cert = user_cert(user=name)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == name[:64]
    trusted = [ca("ed25519", "tls_user")]
    assert verify_certificate_chain(cert, trusted, START + timedelta(minutes=1)).user == name


def test_expiry_with_fake_clock() -> None:
    cert = user_cert()
    trusted = [ca("ed25519", "tls_user")]
    clock = FakeClock(START)
    clock.advance(timedelta(hours=12))
    verify_certificate_chain(cert, trusted, clock.now())
    clock.advance(1)
    with pytest.raises(AccessDenied, match="expired"):
        verify_certificate_chain(cert, trusted, clock.now())


def test_refuses_not_yet_valid() -> None:
    with pytest.raises(AccessDenied, match="not yet valid"):
        verify_certificate_chain(
            user_cert(), [ca("ed25519", "tls_user")], START - timedelta(seconds=1)
        )


@pytest.mark.parametrize("other_purpose", ["tls_host", "db"])
def test_purposes_do_not_cross(other_purpose: str) -> None:
    """A user certificate never verifies under the host or db CA of the same cluster."""
    with pytest.raises(AccessDenied, match="unknown CA"):
        verify_certificate_chain(user_cert(), [ca("ed25519", other_purpose)], START)


def test_host_certificate_refused_by_user_ca() -> None:
    host_ca = ca("ed25519", "tls_host")
    host = issue_host_certificate(
        host_ca,
        key("ed25519", "tls_hostexample"),
        key("ed25519", "host").public_key(),
        "node-1",
        ["node-1.example"],
        ["10.0.0.5"],
        START,
        START + timedelta(days=1),
        make_identity(kind="host", user="node-1", host_id="node-1", logins=()),
    )
    with pytest.raises(AccessDenied, match="unknown CA"):
        verify_certificate_chain(host, [ca("ed25519", "tls_user")], START)
    identity = verify_certificate_chain(
        host, [host_ca], START, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    assert identity.host_id == "node-1"


def test_refuses_bad_signature() -> None:
    """Same issuer name, different key: the name matches but the signature does not."""
    impostor = self_signed_ca(
        key("ed25519", "impostor"), "example tls_user CA", "example", timedelta(days=365), now=START
    )
    with pytest.raises(AccessDenied, match="bad signature"):
        verify_certificate_chain(user_cert(), [impostor], START)


def test_refuses_a_ca_as_leaf() -> None:
    root = ca("ed25519", "tls_user")
    with pytest.raises(AccessDenied, match="is a CA"):
        verify_certificate_chain(root, [root], START)


def test_refuses_missing_identity_extension() -> None:
    host_ca = ca("ed25519", "tls_host")
    host = issue_host_certificate(
        host_ca,
        key("ed25519", "tls_hostexample"),
        key("ed25519", "host").public_key(),
        "node-1",
        [],
        [],
        START,
        START + timedelta(days=1),
    )
    with pytest.raises(AccessDenied, match="missing the identity extension"):
        verify_certificate_chain(host, [host_ca], START)


def test_refuses_missing_usage() -> None:
    with pytest.raises(AccessDenied, match="extended key usage"):
        verify_certificate_chain(
            user_cert(), [ca("ed25519", "tls_user")], START, usage=ExtendedKeyUsageOID.SERVER_AUTH
        )
    verify_certificate_chain(
        user_cert(), [ca("ed25519", "tls_user")], START, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )


def test_refuses_leaf_signed_by_non_ca() -> None:
    """A leaf used as an issuer: even with a valid signature, it is not a CA."""
    leaf_key = key("ed25519", "subject")
    leaf = user_cert()
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mallory")]))
        .issuer_name(leaf.subject)
        .public_key(key("ed25519", "mallory").public_key())
        .serial_number(1)
        .not_valid_before(START)
        .not_valid_after(START + timedelta(hours=1))
        .sign(leaf_key, None)
    )
    with pytest.raises(AccessDenied, match="issuer is not a CA"):
        verify_certificate_chain(forged, [leaf], START)


def test_refuses_identity_of_another_cluster() -> None:
    other_ca = ca("ed25519", "tls_user", "other")
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .issuer_name(other_ca.subject)
        .public_key(key("ed25519", "subject").public_key())
        .serial_number(1)
        .not_valid_before(START)
        .not_valid_after(START + timedelta(hours=1))
        .add_extension(
            user_cert().extensions.get_extension_for_oid(IDENTITY_EXTENSION_OID).value,
            critical=False,
        )
        .sign(key("ed25519", "tls_userother"), None)
    )
    with pytest.raises(AccessDenied, match="another cluster"):
        verify_certificate_chain(forged, [other_ca], START)


def test_issuing_refuses_bad_input() -> None:
    root, root_key = ca("ed25519", "tls_user"), key("ed25519", "tls_userexample")
    subject = key("ed25519", "subject").public_key()
    with pytest.raises(BadParameter, match="outlive its CA"):
        issue_user_certificate(
            root, root_key, subject, make_identity(expires=START + timedelta(days=400)),
            not_before=START,
        )  # fmt: skip
    with pytest.raises(BadParameter, match="does not match the CA"):
        issue_user_certificate(
            root, key("ed25519", "other"), subject, make_identity(), not_before=START
        )
    with pytest.raises(BadParameter, match="cluster"):
        issue_user_certificate(
            root, root_key, subject, make_identity(cluster="other"), not_before=START
        )
    with pytest.raises(BadParameter, match="validity is empty"):
        issue_user_certificate(
            root, root_key, subject, make_identity(), not_before=START + timedelta(days=1)
        )
    with pytest.raises(BadParameter, match="invalid IP"):
        issue_host_certificate(
            root, root_key, subject, "h", [], ["not-an-ip"], START, START + timedelta(hours=1)
        )
    with pytest.raises(BadParameter, match="positive"):
        self_signed_ca(root_key, "x", "example", timedelta(0), now=START)


def test_host_certificate_sans() -> None:
    host = issue_host_certificate(
        ca("ecdsa-p256", "tls_host"),
        key("ecdsa-p256", "tls_hostexample"),
        key("ecdsa-p256", "host").public_key(),
        "node-1",
        ["node-1.example", "node-1"],
        ["10.0.0.5", "::1"],
        START,
        START + timedelta(days=1),
    )
    sans = host.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["node-1", "node-1.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5", "::1"]
    eku = host.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_verified_leaf_holds_exactly_while_the_chain_verifies() -> None:
    """The window of a VerifiedLeaf is where verify_certificate_chain accepts (same checks)."""
    cert = user_cert()
    trusted = [ca("ed25519", "tls_user")]
    leaf = verify_leaf(cert, trusted, START + timedelta(minutes=1))
    assert leaf.identity == identity_from_certificate(cert)
    edges = (leaf.not_before, leaf.not_after, leaf.not_after + timedelta(microseconds=1))
    for now in (START - timedelta(seconds=1), START, START + timedelta(hours=11), *edges):
        try:
            verify_certificate_chain(cert, trusted, now)
            accepted = True
        except AccessDenied:
            accepted = False
        assert leaf.valid_at(now) == accepted, now


def test_verified_leaf_cache() -> None:
    cert = user_cert()
    der = cert.public_bytes(serialization.Encoding.DER)
    now = START + timedelta(minutes=1)
    cache = VerifiedLeafCache(max_entries=2)
    assert cache.get(("db", der), now) is None
    leaf = verify_leaf(cert, [ca("ed25519", "tls_user")], now)
    cache.put(("db", der), leaf)
    assert cache.get(("db", der), now) == leaf.identity
    assert cache.get(("ssh", der), now) is None  # verified on another route: not this one
    assert cache.get(("db", der), leaf.not_after + timedelta(seconds=1)) is None  # expired
    cache.put(("a", der), leaf)
    cache.put(("b", der), leaf)  # bounded: the oldest goes
    assert len(cache) == 2 and cache.get(("db", der), now) is None
    cache.clear()
    assert len(cache) == 0 and cache.get(("a", der), now) is None
