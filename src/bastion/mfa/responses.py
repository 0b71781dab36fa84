"""Reading WebAuthn responses before verification, and explaining the library's refusals.

Layer: pure (no IO). The challenge is read from ``clientDataJSON`` only to find the pending
ceremony; the ``webauthn`` library then checks it against the stored one byte for byte.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from webauthn.helpers import base64url_to_bytes

from bastion.errors import AccessDenied

__all__ = ["challenge_of", "explain"]


def challenge_of(response: Any) -> tuple[str, dict[str, Any]]:
    """The challenge (base64url) claimed by a response's clientDataJSON, and the client data.

    Raises:
        AccessDenied: the response is not a WebAuthn credential JSON object.
    """
    if not isinstance(response, dict) or not isinstance(response.get("response"), dict):
        raise AccessDenied("malformed WebAuthn response: expected PublicKeyCredential JSON")
    raw = response["response"].get("clientDataJSON")
    try:
        client_data = json.loads(base64url_to_bytes(str(raw)))
        challenge = client_data["challenge"]
        if not isinstance(challenge, str) or not challenge:
            raise ValueError("challenge")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise AccessDenied("malformed WebAuthn response: unreadable clientDataJSON") from None
    return challenge, client_data


def explain(exc: Exception) -> str:
    """Turn the webauthn library's message into a reason an operator understands."""
    text = str(exc)
    if "origin" in text:
        return f"wrong origin: {text}"
    if "RP ID hash" in text:
        return "wrong relying party id (rp_id): the authenticator signed for another site"
    if "User verification" in text or "user verification" in text:
        return (
            "user verification (PIN or biometrics) is required but the authenticator did not do it"
        )
    if "signature" in text.lower():
        return "the WebAuthn signature does not verify"
    return text
