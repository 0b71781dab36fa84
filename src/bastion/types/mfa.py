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
    """A discoverable credential (the authenticator keeps the user handle). Not enough on its
    own for passwordless login: see :attr:`passwordless`."""
    passwordless: bool | None = None
    """Registered for passwordless login (``bsh mfa add --passwordless``, "passkey" on the web
    page): only such a device may log in alone. A key registered as a second factor (``False``)
    needs the password too, even when the authenticator made it discoverable. ``None``: stored
    before registrations recorded this; :attr:`passwordless_allowed` decides."""
    software: bool = False
    """Registered by Bastion's software authenticator (its AAGUID)."""
    cloned: bool = False
    """The signature counter went backwards once: refused from then on."""
    user_verified: bool = False
    """The authenticator verified the user (PIN/biometrics) at registration."""

    @property
    def passwordless_allowed(self) -> bool:
        """May this device log in alone (``bsh login --auth=passwordless``, the web passkey)?

        Devices stored before :attr:`passwordless` was recorded count as passwordless only when
        what is stored says a passwordless registration made them: a discoverable credential
        whose registration verified the user (a passwordless registration always required both).
        Every other old device is a second factor. A second-factor key that happened to satisfy
        both cannot be told apart; re-registering it (``bsh mfa rm`` then ``bsh mfa add``)
        records its purpose.
        """
        if self.type != "webauthn":
            return False
        if self.passwordless is not None:
            return self.passwordless
        return self.resident and self.user_verified

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return validate_device_name(value)

    @property
    def kind(self) -> str:
        """What people call it: ``authenticator app`` (TOTP), ``passkey`` (a WebAuthn key that
        may log in alone) or ``security key``."""
        if self.type == "totp":
            return "authenticator app"
        return "passkey" if self.passwordless_allowed else "security key"

    def describe(self) -> str:
        """The kind and the name, as pages and messages show a device (never its id)."""
        return f'{self.kind} "{self.name}"'

    def summary(self) -> dict[str, Any]:
        """What ``bsh mfa ls`` and the API show (no key material)."""
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "added": self.added.isoformat(),
            "last_used": self.last_used.isoformat() if self.last_used else None,
            "aaguid": self.aaguid,
            "passkey": self.passwordless_allowed,
            "discoverable": self.resident,
            "software": self.software,
            "cloned": self.cloned,
        }
