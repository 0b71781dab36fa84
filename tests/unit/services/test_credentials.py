from datetime import UTC, datetime

import pyotp
import pytest
from argon2.exceptions import VerifyMismatchError

from bastion.errors import BadParameter
from bastion.services.credentials import (
    _DUMMY_HASH,
    _HASHER,
    Credentials,
    burn_time_for_unknown_user,
    check_password_strength,
    hash_secret,
    secrets_equal,
    verify_totp,
)


def test_password_hash_is_argon2id_and_verifies():
    creds = Credentials()
    creds.set_password("a long enough passphrase")
    assert creds.password_hash.startswith("$argon2id$")
    assert creds.check_password("a long enough passphrase")
    assert not creds.check_password("a long enough passphrasE")
    assert not Credentials().check_password("anything at all!")


def test_unknown_user_check_costs_a_real_argon2_verify():
    # the dummy hash has the hasher's own parameters (a verify against it costs what a real
    # user's does), is well-formed, and matches no password
    assert not _HASHER.check_needs_rehash(_DUMMY_HASH)
    with pytest.raises(VerifyMismatchError):  # not InvalidHashError: the full argon2 ran
        _HASHER.verify(_DUMMY_HASH, "bastion-timing-equalizer")
    assert not Credentials().check_password("bastion-timing-equalizer")
    burn_time_for_unknown_user("anything at all!")


def test_password_strength():
    with pytest.raises(BadParameter, match="at least 12"):
        check_password_strength("short")


def test_totp_accepts_skew_and_refuses_replay():
    secret = pyotp.random_base32()
    at = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    totp = pyotp.TOTP(secret)
    step = verify_totp(secret, totp.at(at), at, 0)
    assert step == int(at.timestamp()) // 30
    assert verify_totp(secret, totp.at(at), at, step) is None  # replay
    assert verify_totp(secret, totp.at(at.timestamp() - 30), at, 0) is not None  # skew
    assert verify_totp(secret, totp.at(at.timestamp() - 120), at, 0) is None
    assert verify_totp(secret, "12a456", at, 0) is None


def test_secret_hashing():
    assert hash_secret("x") != "x" and len(hash_secret("x")) == 64
    assert secrets_equal("abc", "abc") and not secrets_equal("abc", "abd")
