"""The ``Bastion-MFA`` request header: a WebAuthn assertion bound to one admin request.

Layer: codec (pure; shared by the auth API and its clients, so it imports nothing heavy). The
value is base64url (no padding) of the assertion's compact JSON (the browser-style
``PublicKeyCredential`` JSON that ``bastion.client.mfa.solve`` returns).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Final

from bastion.errors import BadParameter

__all__ = ["ADMIN_MFA_HEADER", "MAX_HEADER", "decode_assertion", "encode_assertion"]

ADMIN_MFA_HEADER: Final = "Bastion-MFA"
MAX_HEADER: Final = 16 * 1024
"""Longest header value accepted (an assertion is well under 2 KiB)."""


def encode_assertion(response: dict[str, Any]) -> str:
    """The header value for ``response``."""
    raw = json.dumps(response, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_assertion(value: str) -> dict[str, Any]:
    """Parse a ``Bastion-MFA`` header value.

    Raises:
        BadParameter: too long, not base64url, not a JSON object.
    """
    if len(value) > MAX_HEADER:
        raise BadParameter(f"{ADMIN_MFA_HEADER} header longer than {MAX_HEADER} bytes")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadParameter(
            f"{ADMIN_MFA_HEADER} header must be base64url of the WebAuthn assertion JSON"
        ) from None
    if not isinstance(data, dict):
        raise BadParameter(f"{ADMIN_MFA_HEADER} header must hold a JSON object")
    return data
