"""The identity document that certificates carry (ARCHITECTURE.md section 3).

It is encoded as compact, canonical JSON (sorted keys, defaults omitted) into an X.509 extension
(:data:`IDENTITY_OID`) and an OpenSSH certificate extension (:data:`SSH_IDENTITY_EXTENSION`).
``version`` lets later readers refuse documents they do not understand.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "IDENTITY_OID",
    "IDENTITY_VERSION",
    "SSH_IDENTITY_EXTENSION",
    "Identity",
    "RouteToTarget",
]

IDENTITY_OID = "2.25.200927262385371584463744089393423357697"
"""OID of the X.509 extension (2.25 + a UUID as integer) holding the identity document."""
SSH_IDENTITY_EXTENSION = "identity@bastion.dev"
IDENTITY_VERSION = 1


class RouteToTarget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    cluster: str = ""
    node: str = ""
    login: str = ""
    db_service: str = ""
    db_user: str = ""
    db_name: str = ""
    app: str = ""


class Identity(BaseModel):
    """What a certificate asserts about its holder. Immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = IDENTITY_VERSION
    cluster: str
    user: str
    kind: Literal["user", "admin", "host", "bot"] = "user"
    roles: tuple[str, ...] = ()
    traits: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    logins: tuple[str, ...] = ()
    expires: datetime
    route: RouteToTarget | None = None
    device_id: str = ""
    device_attestation: str = ""
    """``tpm`` or ``software`` when a trusted device authenticated at issuance (``device_id``,
    ``device_asset_tag`` and ``device_credential_id`` then name it; docs/device-trust.md)."""
    device_asset_tag: str = ""
    device_credential_id: str = ""
    key_attestation: str = ""
    """``tpm`` when the keys of the SSH and the X.509 certificate were attested as held in the
    device's TPM (``bsh login --key-store=tpm``: one key for both; set by the issuer only,
    docs/device-trust.md)."""
    mfa_verified: bool = False
    mfa_scope: str = ""
    mfa_device: str = ""
    """Id of the MFA device (WebAuthn credential or TOTP) used to obtain this certificate; the
    lock target ``mfa_device`` matches it."""
    pinned_ip: str = ""
    access_requests: tuple[str, ...] = ()
    allowed_resources: tuple[str, ...] = ()
    """From a resource-based access request: ``KIND/NAME`` ids, and the certificate reaches
    only these (whatever its roles allow elsewhere). Empty: no such restriction."""
    host_id: str = ""
    """For host identities: the node/agent id the certificate was issued to."""
    user_epoch: str = ""
    """The user's epoch at issuance (``UserSpec.epoch``): a reset, deletion or narrowing change
    replaces it, which revokes this certificate at the authentication gate."""
    renew_until: datetime | None = None
    """The latest expiry a renewal may give (``POST /v1/certs/renew``): a user's original
    login expiry, carried forward by each renewal. None: this certificate's own ``expires``
    (a user) or no ceiling (bots and hosts, whose renewals are bounded by their records)."""
    generation: int = 0
    """Bots: the renewal generation (issue 18). Auth stores the current one; a renewal
    presenting an older one is a copied identity and locks the bot."""
    origin_cluster: str = ""
    """Set on a leaf cluster's identity for a user of a trusted root cluster (``user`` is then
    ``ROOT/NAME`` and ``roles`` the leaf roles mapped through ``role_map``); such a user has no
    stored record on the leaf (docs/trusted-clusters.md)."""

    def encode(self) -> bytes:
        """Canonical compact JSON: sorted keys, no whitespace, defaults left out."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        data["version"] = self.version
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Identity:
        """Parse a document written by :meth:`encode`.

        Raises:
            ValueError: malformed JSON, unknown fields or an unsupported version.
        """
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"identity document is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != IDENTITY_VERSION:
            raise ValueError("identity document has an unsupported version")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"invalid identity document: {exc.errors()[0]['msg']}") from None
