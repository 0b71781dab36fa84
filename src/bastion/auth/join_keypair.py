"""The ``bound_keypair`` bot join method: proof of possession of a key registered in advance.

Layer: auth (pure: values in, values out). ``bctl bots add NAME --public-key=FILE`` stores the
bot's OpenSSH public key on its token resource ``bot-NAME-keypair``. At each join the bot asks
for a challenge (``POST /v1/bots/join/challenge``) and signs
:func:`~bastion.contract.renew.bound_keypair_message` (the challenge and the new public key it
wants certified) with the registered private key.

Challenges are stateless: ``base64(bot|nonce|expiry) . HMAC-SHA256`` under a key derived from
the cluster's key-encryption key (the same on every auth server of an HA cluster), valid for
:data:`CHALLENGE_TTL` and for that bot only. A replayed signature is useless: it covers the new
public key, whose private key only the bot has.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15

from bastion.errors import AccessDenied, BadParameter

__all__ = [
    "CHALLENGE_TTL",
    "challenge_key",
    "check_bound_public_key",
    "mint_challenge",
    "verify_challenge",
    "verify_signature",
]

CHALLENGE_TTL = timedelta(minutes=1)


def challenge_key(kek: bytes) -> bytes:
    """The HMAC key of challenges, derived from the key-encryption key."""
    return hmac.new(kek, b"bastion bound_keypair challenge v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_challenge(key: bytes, bot: str, now: datetime) -> tuple[str, datetime]:
    """A new challenge for ``bot`` and its expiry."""
    expires = now + CHALLENGE_TTL
    payload = f"{bot}|{secrets.token_hex(16)}|{int(expires.timestamp())}".encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}", expires


def verify_challenge(key: bytes, challenge: str, bot: str, now: datetime) -> None:
    """Raises AccessDenied unless ``challenge`` is ours, for ``bot`` and not expired."""
    try:
        payload_text, mac_text = challenge.split(".", 1)
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (ValueError, binascii.Error):
        raise AccessDenied("malformed join challenge") from None
    if not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
        raise AccessDenied("the join challenge was not issued by this cluster")
    name, _, expiry = payload.decode().split("|")
    if name != bot:
        raise AccessDenied("the join challenge is for another bot")
    if int(expiry) < now.timestamp():
        raise AccessDenied("the join challenge has expired; ask for a new one")


def _load(public_key: str) -> object:
    try:
        return serialization.load_ssh_public_key(public_key.strip().encode())
    except (ValueError, TypeError, IndexError, UnsupportedAlgorithm):
        raise BadParameter("bound public key: not an OpenSSH public key") from None


def check_bound_public_key(public_key: str) -> str:
    """The key, normalised (type and base64, no comment). Raises BadParameter."""
    key = _load(public_key)
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise BadParameter("bound public key: use an ed25519, ECDSA or RSA key")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise BadParameter("bound public key: RSA keys need at least 2048 bits")
    return " ".join(public_key.split()[:2])


def verify_signature(public_key: str, message: bytes, signature_b64: str) -> None:
    """Raises AccessDenied unless ``signature_b64`` (standard base64) signs ``message`` with
    ``public_key``: Ed25519, ECDSA with SHA-256 (DER), or RSA PKCS#1 v1.5 with SHA-256."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, binascii.Error):
        raise AccessDenied("malformed join signature") from None
    key = _load(public_key)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, PKCS1v15(), hashes.SHA256())
        else:
            raise AccessDenied("unsupported bound key type")
    except InvalidSignature:
        raise AccessDenied("the join signature does not verify with the bot's key") from None
