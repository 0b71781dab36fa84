"""MFA devices: a user's registered second factors (WebAuthn credentials and TOTP).

Stored by :mod:`bastion.mfa.store` under ``mfa_devices/<user>/<id>``, apart from the user resource.
A device holds no secret for WebAuthn (only the credential's public key); the TOTP secret stays in
the credential store and never appears here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import field_validator

from bastion.types.meta import StrictModel

__all__ = ["DEVICE_NAME_MAX", "MFADevice", "validate_device_name"]

DEVICE_NAME_MAX = 64


def validate_device_name(name: str) -> str:
    """Printable, 1..64 characters, no slash (names appear in keys, tables and audit)."""
    if not name or len(name) > DEVICE_NAME_MAX:
        raise ValueError(f"device name must be 1 to {DEVICE_NAME_MAX} characters")
    if "/" in name or not name.isprintable():
        raise ValueError("device name must be printable and contain no '/'")
    return name


class MFADevice(StrictModel):
    id: str
    """Stable id (UUID); certificates and audit events refer to it (identity ``mfa_device``)."""
    user: str
    name: str
    type: Literal["webauthn", "totp"]
    added: datetime
    last_used: datetime | None = None
    credential_id: str = ""
    """WebAuthn: base64url credential id."""
    public_key: str = ""
    """WebAuthn: base64url COSE public key."""
    sign_count: int = 0
    aaguid: str = ""
    """Authenticator model (UUID); the all-zero AAGUID means "not disclosed"."""
    attestation_format: str = ""
    resident: bool = False
    """A discoverable credential (passkey): usable for passwordless login."""
    software: bool = False
    """Registered by Bastion's software authenticator (its AAGUID)."""
    cloned: bool = False
    """The signature counter went backwards once: refused from then on."""
    user_verified: bool = False
    """The authenticator verified the user (PIN/biometrics) at registration."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return validate_device_name(value)

    def summary(self) -> dict[str, Any]:
        """What ``bsh mfa ls`` and the API show (no key material)."""
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "added": self.added.isoformat(),
            "last_used": self.last_used.isoformat() if self.last_used else None,
            "aaguid": self.aaguid,
            "passkey": self.resident,
            "software": self.software,
            "cloned": self.cloned,
        }
