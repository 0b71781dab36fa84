"""Local credentials: argon2id password hashes, TOTP secrets and one-time secrets.

Stored under ``credentials/<user>`` apart from the user resource, so that reading a user (which
editors and auditors may do) never reveals a hash. Nothing here logs a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bastion.backend.base import Backend, Delete, Item, Put
from bastion.errors import BadParameter, NotFound

__all__ = [
    "Credentials",
    "CredentialStore",
    "check_password_strength",
    "hash_secret",
    "new_secret",
    "secrets_equal",
    "verify_totp",
]

_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


# Verified for unknown users: an encoded argon2id hash with the hasher's parameters (so a check
# costs what a real one does) that matches no password. Built from constant bytes rather than by
# hashing at import, which every CLI and daemon start would pay for.
_DUMMY_HASH = (
    f"$argon2id$v=19$m={_HASHER.memory_cost},t={_HASHER.time_cost},p={_HASHER.parallelism}"
    f"${_b64(b'bastion-dummy-salt'[: _HASHER.salt_len])}${_b64(bytes(_HASHER.hash_len))}"
)
MIN_PASSWORD_LENGTH = 12


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret (tokens, invites): safe to store, fast to check."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadParameter(
            f"password too short: use at least {MIN_PASSWORD_LENGTH} characters "
            "(a passphrase of a few words works well)"
        )
    if len(password) > 1024:
        raise BadParameter("password too long: use at most 1024 characters")


def verify_totp(secret: str, code: str, at: datetime, last_used_step: int) -> int | None:
    """Check a 6-digit TOTP code (one step of clock skew allowed); refuse reuse of a step.

    Returns:
        The accepted time step (store it to refuse replays), or None when the code is wrong.
    """
    code = code.strip().replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(at.timestamp()) // totp.interval
    for step in (now_step - 1, now_step, now_step + 1):
        if step <= last_used_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


@dataclass(slots=True)
class Credentials:
    password_hash: str = ""
    totp_secret: str = ""
    totp_last_step: int = 0

    def check_password(self, password: str) -> bool:
        try:
            return bool(_HASHER.verify(self.password_hash or _DUMMY_HASH, password)) and bool(
                self.password_hash
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def set_password(self, password: str) -> None:
        check_password_strength(password)
        self.password_hash = _HASHER.hash(password)


def burn_time_for_unknown_user(password: str) -> None:
    """Spend the same argon2 time as a real check, so unknown users are not detectable."""
    try:
        _HASHER.verify(_DUMMY_HASH, password + "x")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        pass


class CredentialStore:
    PREFIX = "credentials/"

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def get(self, user: str) -> Credentials:
        try:
            item = await self._backend.get(self.PREFIX + user)
        except NotFound:
            return Credentials()
        return Credentials(**json.loads(item.value))

    async def put(self, user: str, creds: Credentials) -> None:
        await self._backend.put(self.put_op(user, creds).item)

    def put_op(self, user: str, creds: Credentials) -> Put:
        """The write of ``creds``, for a transaction with its audit event."""
        data = {
            "password_hash": creds.password_hash,
            "totp_secret": creds.totp_secret,
            "totp_last_step": creds.totp_last_step,
        }
        return Put(Item(key=self.PREFIX + user, value=json.dumps(data).encode()))

    async def delete_op(self, user: str) -> Delete | None:
        """The delete of ``user``'s credentials at their current revision (None when there are
        none), for a transaction with its audit event; a concurrent change makes the
        transaction fail with CompareFailed or NotFound on this key."""
        try:
            item = await self._backend.get(self.PREFIX + user)
        except NotFound:
            return None
        return Delete(item.key, item.revision)

    async def delete(self, user: str) -> None:
        try:
            await self._backend.delete(self.PREFIX + user)
        except NotFound:
            pass
