"""bound_keypair joins (issue 18): stateless challenges (ours, for this bot, not expired) and
the proof of possession (a signature over the challenge and the new key, by the bound key)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bastion.auth.join_keypair import (
    challenge_key,
    check_bound_public_key,
    mint_challenge,
    verify_challenge,
    verify_signature,
)
from bastion.cli.bbot_start import sign_bound_keypair
from bastion.contract.renew import bound_keypair_message
from bastion.errors import AccessDenied, BadParameter

NOW = datetime(2026, 1, 1, tzinfo=UTC)
KEY = challenge_key(b"k" * 32)


def _pair(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> tuple[bytes, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode() + " bot@ci"


def test_a_challenge_is_ours_for_one_bot_and_expires() -> None:
    challenge, expires = mint_challenge(KEY, "ci", NOW)
    verify_challenge(KEY, challenge, "ci", NOW + timedelta(seconds=30))
    with pytest.raises(AccessDenied, match="another bot"):
        verify_challenge(KEY, challenge, "other", NOW)
    with pytest.raises(AccessDenied, match="expired"):
        verify_challenge(KEY, challenge, "ci", expires + timedelta(seconds=1))
    with pytest.raises(AccessDenied, match="not issued"):
        verify_challenge(challenge_key(b"x" * 32), challenge, "ci", NOW)
    payload, mac = challenge.split(".")
    with pytest.raises(AccessDenied):
        verify_challenge(KEY, payload + "A." + mac, "ci", NOW)
    with pytest.raises(AccessDenied, match="malformed"):
        verify_challenge(KEY, "garbage", "ci", NOW)


@pytest.mark.parametrize(
    "key", [ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())]
)
def test_only_the_bound_key_signing_this_challenge_and_key_passes(
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
) -> None:
    private, public = _pair(key)
    bound = check_bound_public_key(public)
    assert not bound.endswith("bot@ci")
    challenge, _ = mint_challenge(KEY, "ci", NOW)
    message = bound_keypair_message(challenge, "ssh-ed25519 AAAA new")
    verify_signature(bound, message, sign_bound_keypair(private, message))
    other_private, _ = _pair(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(AccessDenied, match="does not verify"):
        verify_signature(bound, message, sign_bound_keypair(other_private, message))
    # a captured signature does not certify another key
    stolen = sign_bound_keypair(private, message)
    with pytest.raises(AccessDenied):
        verify_signature(bound, bound_keypair_message(challenge, "ssh-ed25519 BBBB"), stolen)
    with pytest.raises(AccessDenied, match="malformed"):
        verify_signature(bound, message, "not base64!")


def test_a_bad_bound_key_is_a_bad_parameter() -> None:
    with pytest.raises(BadParameter):
        check_bound_public_key("not a key")
