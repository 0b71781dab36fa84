"""Device challenges delivered with the login response (the one-round-trip ceremony).

Layer: auth (pure: HMAC and JSON, no IO, no clock reads). ``bsh login`` gets, with its fresh
certificates, a challenge auth keeps no state for until it is answered: a MAC'd token naming the
user, an expiry and a random nonce. The device signs it (``authn_message(cluster, token, b"",
profile)``) and answers in one round trip (``/v1/device-authn/finish``); auth then records the
nonce (until the token's expiry) in the same transaction as the device's update, so a token
answers once. Auth servers of a cluster share the key (it derives from their common KEK).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "CHALLENGE_TOKEN_TTL",
    "ChallengeToken",
    "challenge_key",
    "is_challenge_token",
    "mint_challenge",
    "open_challenge",
]


CHALLENGE_TOKEN_TTL = timedelta(minutes=2)
_TOKEN_PREFIX = "dc1."
_TOKEN_KEY_LABEL = b"bastion device challenge key v1"


def challenge_key(kek: bytes) -> bytes:
    """The key that MACs device challenges, derived from auth's key-encryption key (every
    auth server of a cluster holds the same one)."""
    return hmac.new(kek, _TOKEN_KEY_LABEL, hashlib.sha256).digest()


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def mint_challenge(key: bytes, user: str, now: datetime) -> str:
    """A fresh device challenge for ``user`` (``""``: for whoever logs in next, as the ping
    sends it, so the signature travels with the login request) that auth keeps no state for
    until it is used:
    ``dc1.<payload>.<mac>``, the payload naming the user, an expiry :data:`CHALLENGE_TOKEN_TTL`
    away and a 128-bit random nonce. Sent with the login's certificates, so the device
    ceremony needs one round trip instead of two; its single use is enforced when it is
    answered (the nonce is recorded, with the expiry, in the same transaction)."""
    expires = int((now + CHALLENGE_TOKEN_TTL).timestamp())
    body = json.dumps({"u": user, "x": expires, "n": secrets.token_hex(16)}, separators=(",", ":"))
    payload = body.encode()
    mac = _mac(key, payload)
    return _TOKEN_PREFIX + _b64url(payload) + "." + _b64url(mac)


@dataclass(frozen=True, slots=True)
class ChallengeToken:
    nonce: str
    """Hex; the single-use record's name."""
    expires: datetime


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_challenge_token(text: str) -> bool:
    return text.startswith(_TOKEN_PREFIX)


def open_challenge(key: bytes, token: str, user: str, now: datetime) -> ChallengeToken | None:
    """The challenge ``token`` minted for ``user`` (or for any user), when its MAC verifies and
    it has not expired at ``now``; None otherwise (forged, another user's, expired, malformed)."""
    if not is_challenge_token(token) or len(token) > 512:
        return None
    try:
        payload_text, mac_text = token[len(_TOKEN_PREFIX) :].split(".")
        payload, mac = _unb64url(payload_text), _unb64url(mac_text)
    except (ValueError, binascii.Error):
        return None
    if _b64url(payload) != payload_text or _b64url(mac) != mac_text:
        return None  # canonical encoding only: one token string per challenge
    if not hmac.compare_digest(mac, _mac(key, payload)):
        return None
    try:
        fields = json.loads(payload)
        expires = datetime.fromtimestamp(int(fields["x"]), tz=now.tzinfo)
        nonce, owner = str(fields["n"]), str(fields["u"])
    except (ValueError, KeyError, TypeError, OverflowError):
        return None
    if owner not in ("", user) or expires <= now or not nonce.isalnum() or len(nonce) != 32:
        return None
    return ChallengeToken(nonce=nonce, expires=expires)
