"""Tests for bastion.ca.krl: round trips, revocation checks, fuzzing, ssh-keygen interop."""

from __future__ import annotations

import functools
import struct
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.ca.keys import PrivateKey, generate_private_key
from bastion.ca.krl import (
    KRL_MAGIC,
    build_krl,
    parse_krl,
    sign_krl,
    verify_krl_signature,
)
from bastion.ca.sshcert import (
    parse_ssh_certificate,
    sign_ssh_certificate,
    ssh_public_key_blob,
)
from bastion.errors import AccessDenied, BadParameter, RemoteProtocolError
from bastion.types.authority import KeyAlgorithm

START = datetime(2026, 1, 1, tzinfo=UTC)
ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ed25519", "ecdsa-p256", "rsa-3072")


@functools.cache
def key(algorithm: KeyAlgorithm, name: str) -> PrivateKey:
    return generate_private_key(algorithm)


def cert(ca: PrivateKey, key_id: str, serial: int, subject: PrivateKey | None = None) -> bytes:
    return sign_ssh_certificate(
        ca,
        (subject or key("ed25519", "subject")).public_key(),
        cert_type="user",
        serial=serial,
        key_id=key_id,
        principals=["alice"],
        valid_after=START,
        valid_before=START + timedelta(days=3650),
    )


def sample(ca: PrivateKey, **kw: object) -> bytes:
    args: dict[str, object] = {
        "key_ids": ["mallory", "eve"],
        "serials": [42, 7, 2**64 - 1],
        "version": 1_700_000_000_123,
        "generated": 1_700_000_000,
        "comment": "bastion test",
    }
    args.update(kw)
    return build_krl([ca.public_key()], **args)  # type: ignore[arg-type]


# --- round trips and revocation decisions ----------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_round_trip(alg: KeyAlgorithm) -> None:
    ca = key(alg, "ca")
    revoked_key = key("ecdsa-p256", "revoked")
    krl = parse_krl(sample(ca, explicit_keys=[revoked_key.public_key()]))
    assert (krl.version, krl.generated, krl.comment) == (
        1_700_000_000_123,
        1_700_000_000,
        "bastion test",
    )
    [section] = krl.certificates
    assert section.ca_key == ssh_public_key_blob(ca.public_key())
    assert section.key_ids == {"mallory", "eve"}
    assert section.serials == {7, 42, 2**64 - 1}
    assert krl.explicit_keys == {ssh_public_key_blob(revoked_key.public_key())}
    assert krl.signature_keys == ()


def test_build_is_deterministic_and_sorted() -> None:
    ca = key("ed25519", "ca")
    a = sample(ca, key_ids=["b", "a", "a"], serials=[3, 1, 3])
    b = sample(ca, key_ids=["a", "b"], serials=[1, 3])
    assert a == b
    assert struct.pack(">Q", 1) + struct.pack(">Q", 3) in a


def test_empty_krl_is_only_a_header() -> None:
    data = build_krl([], version=1, generated=2)
    assert data.startswith(KRL_MAGIC)
    krl = parse_krl(data)
    assert krl.certificates == () and krl.version == 1 and krl.generated == 2


def test_is_revoked_by_key_id_serial_key_and_ca() -> None:
    ca, other_ca = key("ed25519", "ca"), key("ed25519", "other-ca")
    krl = parse_krl(sample(ca, explicit_keys=[key("ed25519", "stolen").public_key()]))
    assert krl.is_revoked(parse_ssh_certificate(cert(ca, "mallory", 1)))
    assert krl.is_revoked(parse_ssh_certificate(cert(ca, "alice", 42)))
    assert not krl.is_revoked(parse_ssh_certificate(cert(ca, "alice", 43)))
    # the same key id under another CA is not revoked: sections are per CA key
    assert not krl.is_revoked(parse_ssh_certificate(cert(other_ca, "mallory", 42)))
    stolen = parse_ssh_certificate(cert(other_ca, "alice", 5, key("ed25519", "stolen")))
    assert krl.is_revoked(stolen)
    # revoking the CA key itself revokes everything it signed
    ca_gone = parse_krl(build_krl([], explicit_keys=[ca.public_key()], version=1, generated=1))
    assert ca_gone.is_revoked(parse_ssh_certificate(cert(ca, "alice", 9)))


def test_one_section_per_ca_key_during_rotation() -> None:
    old, new = key("ed25519", "ca"), key("ecdsa-p256", "ca")
    krl = parse_krl(
        build_krl([old.public_key(), new.public_key()], ["eve"], version=1, generated=1)
    )
    assert len(krl.certificates) == 2
    for ca in (old, new):
        assert krl.is_revoked(parse_ssh_certificate(cert(ca, "eve", 3)))


def test_build_refuses_bad_input() -> None:
    ca = key("ed25519", "ca")
    with pytest.raises(BadParameter, match="serial 0"):
        build_krl([ca.public_key()], serials=[0], version=1, generated=1)
    with pytest.raises(BadParameter, match="CA key"):
        build_krl([], key_ids=["eve"], version=1, generated=1)
    with pytest.raises(BadParameter, match="64 bits"):
        build_krl([], version=-1, generated=1)


# --- embedded (legacy) and detached signatures -------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_embedded_signature_verified_on_parse(alg: KeyAlgorithm) -> None:
    ca = key(alg, "ca")
    data = sample(ca, embed_signature_key=ca)
    assert parse_krl(data).signature_keys == (ssh_public_key_blob(ca.public_key()),)
    tampered = data.replace(b"mallory", b"mallorx")
    with pytest.raises(RemoteProtocolError, match="signature"):
        parse_krl(tampered)


def test_no_section_after_signature() -> None:
    ca = key("ed25519", "ca")
    data = sample(ca, embed_signature_key=ca)
    with pytest.raises(RemoteProtocolError, match="after its signature"):
        parse_krl(data + b"\x02" + struct.pack(">I", 0))


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_detached_signature(alg: KeyAlgorithm) -> None:
    ca, other = key(alg, "ca"), key("ed25519", "other-ca")
    data = sample(ca)
    sig = sign_krl(data, ca)
    assert verify_krl_signature(data, sig, [other.public_key(), ca.public_key()]) == ca.public_key()
    with pytest.raises(AccessDenied, match="altered"):
        verify_krl_signature(data + b"x", sig, [ca.public_key()])
    with pytest.raises(AccessDenied, match="not a trusted"):
        verify_krl_signature(data, sig, [other.public_key()])
    with pytest.raises(AccessDenied, match="namespace"):
        verify_krl_signature(data, sign_krl(data, ca, "file"), [ca.public_key()])
    with pytest.raises(AccessDenied, match="malformed|not an SSH"):
        verify_krl_signature(data, sig.replace("A", "!", 1)[:60], [ca.public_key()])


# --- garbage in: only RemoteProtocolError ----------------------------------------------------


@given(st.binary(max_size=512))
def test_fuzz_garbage(data: bytes) -> None:
    for candidate in (data, KRL_MAGIC + data, KRL_MAGIC + struct.pack(">I", 1) + data):
        try:
            parse_krl(candidate)
        except RemoteProtocolError:
            pass


@given(st.integers(min_value=0), st.binary(max_size=8), st.integers(min_value=0, max_value=255))
def test_fuzz_truncate_and_flip(cut: int, junk: bytes, flip: int) -> None:
    ca = key("ed25519", "ca")
    data = sample(ca, embed_signature_key=ca)
    pos = cut % len(data)
    mutated = [
        data[:pos],
        data[:pos] + junk,
        data[:pos] + bytes([data[pos] ^ flip]) + data[pos + 1 :],
    ]
    for candidate in mutated:
        try:
            parse_krl(candidate)
        except RemoteProtocolError:
            pass


def test_refuses_known_garbage() -> None:
    ca = key("ed25519", "ca")
    good = sample(ca)
    with pytest.raises(RemoteProtocolError, match="magic"):
        parse_krl(b"ssh-ed25519 AAAA...")
    with pytest.raises(RemoteProtocolError, match="format version"):
        parse_krl(KRL_MAGIC + struct.pack(">I", 2) + good[12:])
    with pytest.raises(RemoteProtocolError, match="unknown KRL section"):
        parse_krl(good + b"\x09" + struct.pack(">I", 0))
    bad_fp = b"\x05" + struct.pack(">I", 4 + 3) + struct.pack(">I", 3) + b"abc"
    with pytest.raises(RemoteProtocolError, match="expected 32"):
        parse_krl(good + bad_fp)


# --- interop with OpenSSH ---------------------------------------------------------------------
