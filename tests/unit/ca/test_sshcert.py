"""Tests for bastion.ca.sshcert: round trips, refusals, fuzzing, OpenSSH and asyncssh interop."""

from __future__ import annotations

import functools
import struct
from datetime import UTC, datetime, timedelta

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ca.keys import PrivateKey, generate_private_key
from bastion.ca.sshcert import (
    DEFAULT_USER_EXTENSIONS,
    FOREVER,
    SSHCertificate,
    identity_from_ssh_certificate,
    parse_ssh_certificate,
    sign_ssh_certificate,
    ssh_host_certificate,
    ssh_public_key_blob,
    ssh_user_certificate,
    to_openssh_line,
    verify_ssh_certificate,
)
from bastion.clock import FakeClock
from bastion.errors import AccessDenied, BadParameter, RemoteProtocolError
from bastion.types.authority import KeyAlgorithm
from bastion.types.identity import SSH_IDENTITY_EXTENSION, Identity

ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ed25519", "ecdsa-p256", "rsa-3072")
START = datetime(2026, 1, 1, tzinfo=UTC)


@functools.cache
def key(algorithm: KeyAlgorithm, name: str) -> PrivateKey:
    """Keys are expensive (RSA): one per (algorithm, role) per test session."""
    return generate_private_key(algorithm)


def make_identity(**overrides: object) -> Identity:
    fields: dict[str, object] = {
        "cluster": "example",
        "user": "alice",
        "roles": ("dev", "ops"),
        "traits": {"team": ("blue",)},
        "logins": ("alice", "root"),
        "expires": START + timedelta(hours=12),
        "device_id": "dev-1",
        "mfa_verified": True,
    }
    fields.update(overrides)
    return Identity.model_validate(fields)


def user_cert(ca: PrivateKey, subject: PrivateKey, identity: Identity | None = None) -> bytes:
    return ssh_user_certificate(
        ca, subject.public_key(), identity or make_identity(), serial=7, valid_after=START
    )


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("ca_alg", ALGORITHMS)
@pytest.mark.parametrize("subject_alg", ALGORITHMS)
def test_identity_round_trip(ca_alg: KeyAlgorithm, subject_alg: KeyAlgorithm) -> None:
    ca, subject = key(ca_alg, "ca"), key(subject_alg, "subject")
    identity = make_identity(pinned_ip="192.0.2.10")
    blob = user_cert(ca, subject, identity)
    cert = parse_ssh_certificate(blob)
    clock = FakeClock(START + timedelta(minutes=5))
    verify_ssh_certificate(
        cert,
        [ca.public_key()],
        clock.now(),
        cert_type="user",
        principal="root",
        client_address="192.0.2.10",
    )
    assert identity_from_ssh_certificate(cert) == identity
    assert cert.principals == ("alice", "root")
    assert cert.key_id == "alice"
    assert cert.serial == 7
    assert cert.critical_options == {"source-address": "192.0.2.10"}
    assert cert.public_key == subject.public_key()
    assert cert.signature_key == ca.public_key()
    assert cert.valid_before_datetime == identity.expires
    assert cert.valid_after_datetime == START
    # the line form parses to the same certificate
    assert parse_ssh_certificate(to_openssh_line(blob, "alice@example")) == cert
    assert parse_ssh_certificate(to_openssh_line(blob).encode()) == cert


def test_rsa_ca_signs_with_sha512() -> None:
    cert = parse_ssh_certificate(user_cert(key("rsa-3072", "ca"), key("ed25519", "subject")))
    assert cert.signature.startswith(struct.pack(">I", 12) + b"rsa-sha2-512")


def test_options_sorted_and_values_wrapped() -> None:
    ca, subject = key("ed25519", "ca"), key("ed25519", "subject")
    common = {
        "cert_type": "user",
        "serial": 1,
        "key_id": "k",
        "principals": ["p"],
        "valid_after": START,
        "valid_before": START + timedelta(hours=1),
        "nonce": b"n" * 32,
    }
    forward = sign_ssh_certificate(
        ca,
        subject.public_key(),
        extensions={"a": "", "b": "x"},
        **common,  # type: ignore[arg-type]
    )
    backward = sign_ssh_certificate(
        ca,
        subject.public_key(),
        extensions={"b": "x", "a": ""},
        **common,  # type: ignore[arg-type]
    )
    assert forward == backward
    expected = struct.pack(">I", 1) + b"a" + struct.pack(">I", 0)
    expected += struct.pack(">I", 1) + b"b" + struct.pack(">I", 5) + struct.pack(">I", 1) + b"x"
    assert struct.pack(">I", len(expected)) + expected in forward
    assert list(parse_ssh_certificate(forward).extensions) == ["a", "b"]


def test_default_user_extensions_and_host_has_none() -> None:
    ca, subject = key("ed25519", "ca"), key("ed25519", "subject")
    cert = parse_ssh_certificate(user_cert(ca, subject))
    assert set(DEFAULT_USER_EXTENSIONS) | {SSH_IDENTITY_EXTENSION} == set(cert.extensions)
    host = parse_ssh_certificate(
        ssh_host_certificate(
            ca,
            subject.public_key(),
            "node-1",
            ["node-1", "web.example", "10.0.0.5"],
            serial=3,
            valid_after=START,
            valid_before=START + timedelta(days=1),
        )
    )
    assert host.cert_type == "host"
    assert host.extensions == {}
    assert host.principals == ("node-1", "web.example", "10.0.0.5")
    verify_ssh_certificate(
        host, [ca.public_key()], START, cert_type="host", principal="web.example"
    )


def test_custom_extensions_override_defaults() -> None:
    ca, subject = key("ed25519", "ca"), key("ed25519", "subject")
    blob = ssh_user_certificate(
        ca,
        subject.public_key(),
        make_identity(),
        serial=1,
        valid_after=START,
        extensions={"permit-pty": ""},
    )
    assert set(parse_ssh_certificate(blob).extensions) == {"permit-pty", SSH_IDENTITY_EXTENSION}


# --- refusals -----------------------------------------------------------------------------------


@pytest.fixture
def signed() -> tuple[PrivateKey, SSHCertificate]:
    ca = key("ed25519", "ca")
    return ca, parse_ssh_certificate(user_cert(ca, key("ed25519", "subject")))


def test_refuses_unknown_ca(signed: tuple[PrivateKey, SSHCertificate]) -> None:
    _, cert = signed
    with pytest.raises(AccessDenied, match="unknown CA"):
        verify_ssh_certificate(
            cert, [key("ed25519", "other").public_key()], START, cert_type="user"
        )


def test_refuses_user_cert_under_host_ca(signed: tuple[PrivateKey, SSHCertificate]) -> None:
    _, cert = signed
    host_ca = key("ed25519", "host-ca").public_key()
    with pytest.raises(AccessDenied, match="unknown CA"):
        verify_ssh_certificate(cert, [host_ca], START, cert_type="user")


def test_refuses_bad_signature(signed: tuple[PrivateKey, SSHCertificate]) -> None:
    ca, cert = signed
    blob = bytearray(cert.blob)
    offset = blob.index(b"alice")  # key id: covered by the signature
    blob[offset] ^= 0x01
    tampered = parse_ssh_certificate(bytes(blob))
    with pytest.raises(AccessDenied, match="bad signature"):
        verify_ssh_certificate(tampered, [ca.public_key()], START, cert_type="user")


@pytest.mark.parametrize("ca_alg", ALGORITHMS)
def test_refuses_signature_from_other_key_claiming_ca(ca_alg: KeyAlgorithm) -> None:
    """A certificate naming the trusted CA as signer but signed by an attacker key."""
    ca, attacker = key(ca_alg, "ca"), key(ca_alg, "attacker")
    good = parse_ssh_certificate(user_cert(ca, key("ed25519", "subject")))
    forged = parse_ssh_certificate(user_cert(attacker, key("ed25519", "subject")))
    swapped = good.blob[: len(good.signed_data)] + forged.blob[len(forged.signed_data) :]
    with pytest.raises(AccessDenied, match="bad signature"):
        verify_ssh_certificate(
            parse_ssh_certificate(swapped), [ca.public_key()], START, cert_type="user"
        )


def test_refuses_wrong_type(signed: tuple[PrivateKey, SSHCertificate]) -> None:
    ca, cert = signed
    with pytest.raises(AccessDenied, match="expected a host certificate"):
        verify_ssh_certificate(cert, [ca.public_key()], START, cert_type="host")


def test_expiry_with_fake_clock(signed: tuple[PrivateKey, SSHCertificate]) -> None:
    ca, cert = signed
    clock = FakeClock(START)
    clock.advance(timedelta(hours=12) - timedelta(seconds=1))
    verify_ssh_certificate(cert, [ca.public_key()], clock.now(), cert_type="user")
    clock.advance(1)
    with pytest.raises(AccessDenied, match="expired"):
        verify_ssh_certificate(cert, [ca.public_key()], clock.now(), cert_type="user")


def test_refuses_not_yet_valid(signed: tuple[PrivateKey, SSHCertificate]) -> None:
    ca, cert = signed
    with pytest.raises(AccessDenied, match="not yet valid"):
        verify_ssh_certificate(
            cert, [ca.public_key()], START - timedelta(seconds=1), cert_type="user"
        )


def test_refuses_unlisted_principal(signed: tuple[PrivateKey, SSHCertificate]) -> None:
    ca, cert = signed
    with pytest.raises(AccessDenied, match="'admin' is not listed"):
        verify_ssh_certificate(cert, [ca.public_key()], START, cert_type="user", principal="admin")


def test_refuses_cert_without_principals_when_principal_requested() -> None:
    ca = key("ed25519", "ca")
    blob = sign_ssh_certificate(
        ca,
        key("ed25519", "subject").public_key(),
        cert_type="user",
        serial=1,
        key_id="x",
        principals=[],
        valid_after=START,
        valid_before=FOREVER,
    )
    with pytest.raises(AccessDenied, match="no principals"):
        verify_ssh_certificate(
            parse_ssh_certificate(blob), [ca.public_key()], START, cert_type="user", principal="x"
        )


@pytest.mark.parametrize(
    ("client_address", "reason"),
    [(None, "client address is unknown"), ("198.51.100.1", "not in source-address")],
)
def test_source_address_pinning(client_address: str | None, reason: str) -> None:
    ca = key("ed25519", "ca")
    blob = user_cert(ca, key("ed25519", "subject"), make_identity(pinned_ip="192.0.2.0/24"))
    cert = parse_ssh_certificate(blob)
    verify_ssh_certificate(
        cert, [ca.public_key()], START, cert_type="user", client_address="192.0.2.77"
    )
    with pytest.raises(AccessDenied, match=reason):
        verify_ssh_certificate(
            cert, [ca.public_key()], START, cert_type="user", client_address=client_address
        )


def test_refuses_unknown_critical_option() -> None:
    ca = key("ed25519", "ca")
    blob = sign_ssh_certificate(
        ca,
        key("ed25519", "subject").public_key(),
        cert_type="user",
        serial=1,
        key_id="x",
        principals=["x"],
        valid_after=START,
        valid_before=FOREVER,
        critical_options={"no-such-option@example": "1"},
    )
    with pytest.raises(AccessDenied, match="unsupported critical option"):
        verify_ssh_certificate(
            parse_ssh_certificate(blob), [ca.public_key()], START, cert_type="user"
        )


def test_identity_missing_or_inconsistent() -> None:
    ca, subject = key("ed25519", "ca"), key("ed25519", "subject").public_key()
    common = {"serial": 1, "valid_after": START, "valid_before": START + timedelta(hours=1)}
    plain = sign_ssh_certificate(
        ca,
        subject,
        cert_type="user",
        key_id="alice",
        principals=["alice"],
        **common,  # type: ignore[arg-type]
    )
    with pytest.raises(AccessDenied, match="no identity extension"):
        identity_from_ssh_certificate(parse_ssh_certificate(plain))
    doc = make_identity(logins=("alice",)).encode().decode()
    widened = sign_ssh_certificate(
        ca,
        subject,
        cert_type="user",
        key_id="alice",
        principals=["alice", "root"],
        extensions={SSH_IDENTITY_EXTENSION: doc},
        **common,  # type: ignore[arg-type]
    )
    with pytest.raises(AccessDenied, match="logins do not match"):
        identity_from_ssh_certificate(parse_ssh_certificate(widened))
    renamed = sign_ssh_certificate(
        ca,
        subject,
        cert_type="user",
        key_id="mallory",
        principals=["alice"],
        extensions={SSH_IDENTITY_EXTENSION: doc},
        **common,  # type: ignore[arg-type]
    )
    with pytest.raises(AccessDenied, match="does not match its key id"):
        identity_from_ssh_certificate(parse_ssh_certificate(renamed))
    garbage = sign_ssh_certificate(
        ca,
        subject,
        cert_type="user",
        key_id="alice",
        principals=["alice"],
        extensions={SSH_IDENTITY_EXTENSION: "{not json"},
        **common,  # type: ignore[arg-type]
    )
    with pytest.raises(AccessDenied, match="unreadable"):
        identity_from_ssh_certificate(parse_ssh_certificate(garbage))


def test_signing_refuses_bad_input() -> None:
    ca, subject = key("ed25519", "ca"), key("ed25519", "subject").public_key()
    with pytest.raises(BadParameter, match="no logins"):
        ssh_user_certificate(ca, subject, make_identity(logins=()), serial=1, valid_after=START)
    with pytest.raises(BadParameter, match="validity is empty"):
        ssh_user_certificate(
            ca, subject, make_identity(), serial=1, valid_after=START + timedelta(days=1)
        )
    with pytest.raises(BadParameter, match="64 bits"):
        ssh_user_certificate(ca, subject, make_identity(), serial=2**64, valid_after=START)
    with pytest.raises(BadParameter, match="timezone-aware"):
        ssh_user_certificate(
            ca, subject, make_identity(), serial=1, valid_after=datetime(2026, 1, 1)
        )
    with pytest.raises(BadParameter, match="host id"):
        ssh_host_certificate(ca, subject, "", [], 1, START, START + timedelta(days=1))


# --- parser robustness --------------------------------------------------------------------------


def _parse_or_protocol_error(data: bytes | str) -> None:
    try:
        parse_ssh_certificate(data)
    except RemoteProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _parse_or_protocol_error(data)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text(data: str) -> None:
    _parse_or_protocol_error(data)


@pytest.mark.parametrize("ca_alg", ALGORITHMS)
def test_every_truncation_is_a_protocol_error(ca_alg: KeyAlgorithm) -> None:
    blob = user_cert(key(ca_alg, "ca"), key(ca_alg, "subject"))
    for end in range(len(blob)):
        with pytest.raises(RemoteProtocolError):
            parse_ssh_certificate(blob[:end])
    with pytest.raises(RemoteProtocolError, match="trailing"):
        parse_ssh_certificate(blob + b"\x00")


@functools.cache
def sample_blob(alg: KeyAlgorithm) -> bytes:
    """One fixed certificate per algorithm, so that hypothesis sees stable sizes."""
    return user_cert(key(alg, "ca"), key(alg, "subject"))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_certificates(data: st.DataObject) -> None:
    alg = data.draw(st.sampled_from(ALGORITHMS))
    blob = bytearray(sample_blob(alg))
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(blob) - 1))
        blob[index] = data.draw(st.integers(0, 255))
    _parse_or_protocol_error(bytes(blob))


def test_line_type_must_match_blob() -> None:
    line = to_openssh_line(user_cert(key("ed25519", "ca"), key("ed25519", "subject")))
    with pytest.raises(RemoteProtocolError, match="does not match"):
        parse_ssh_certificate(line.replace("ssh-ed25519-cert", "ssh-rsa-cert", 1))
    with pytest.raises(RemoteProtocolError, match="base64"):
        parse_ssh_certificate(line.split()[0] + " !!!")
    with pytest.raises(RemoteProtocolError, match="not a certificate"):
        parse_ssh_certificate(ssh_public_key_blob(key("ed25519", "ca").public_key()))


# --- interop with OpenSSH and asyncssh ----------------------------------------------------------


@pytest.mark.parametrize("ca_alg", ALGORITHMS)
def test_asyncssh_accepts_our_certificates(ca_alg: KeyAlgorithm) -> None:
    ca = key(ca_alg, "ca")
    blob = user_cert(ca, key("ed25519", "subject"))
    imported = asyncssh.import_certificate(to_openssh_line(blob, "alice"))
    assert imported.principals == ["alice", "root"]
    assert ssh_public_key_blob(ca.public_key()) == imported.signing_key.public_data
    valid_at = int((START + timedelta(hours=1)).timestamp())
    assert imported._valid_after <= valid_at < imported._valid_before
    # asyncssh checks our signature when it imports; a tampered certificate is refused
    tampered = bytearray(blob)
    tampered[blob.index(b"alice")] ^= 0x01
    with pytest.raises((ValueError, asyncssh.KeyImportError)):
        asyncssh.import_certificate(to_openssh_line(bytes(tampered)))


def test_we_read_asyncssh_certificates() -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    user = asyncssh.generate_private_key("ssh-ed25519")
    theirs = ca.generate_user_certificate(
        user, "bob", serial=9, principals=["bob"], valid_after=0, valid_before=FOREVER
    )
    cert = parse_ssh_certificate(theirs.public_data)
    ca_public = serialization.load_ssh_public_key(ca.export_public_key())
    assert isinstance(ca_public, type(key("ed25519", "ca").public_key()))
    verify_ssh_certificate(cert, [ca_public], START, cert_type="user", principal="bob")
    assert cert.key_id == "bob"
    assert cert.valid_before_datetime is None
