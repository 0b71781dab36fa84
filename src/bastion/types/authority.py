"""Certificate authorities as resources: one per purpose, with rotation state.

A CA holds ``active_keys`` (the key that signs) and ``additional_trusted_keys`` (keys that are
trusted but do not sign: the next key during rotation, or the previous one until it is dropped).
Private keys are stored encrypted (``private_key_encrypted``) and never leave auth: the API strips
them before returning a CA.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from bastion.types.meta import Resource, StrictModel

__all__ = [
    "CA_TYPES",
    "CAKeyPair",
    "CAType",
    "CertAuthority",
    "CertAuthoritySpec",
    "KeyAlgorithm",
    "Rotation",
    "RotationPhase",
]

CAType = Literal["ssh_user", "ssh_host", "tls_user", "tls_host", "db", "jwt"]
CA_TYPES: tuple[CAType, ...] = ("ssh_user", "ssh_host", "tls_user", "tls_host", "db", "jwt")
KeyAlgorithm = Literal["ed25519", "ecdsa-p256", "rsa-3072"]
RotationPhase = Literal["standby", "init", "update", "rollback"]


class CAKeyPair(StrictModel):
    id: str
    """Stable key id: first 16 hex digits of SHA-256 over the public key."""
    algorithm: KeyAlgorithm
    public_key: str
    """OpenSSH public key line for SSH CAs, PEM SubjectPublicKeyInfo otherwise."""
    cert_pem: str = ""
    """Self-signed CA certificate (X.509 CAs only)."""
    private_key_encrypted: str = ""
    """Envelope-encrypted PKCS#8; empty in every copy that leaves auth."""
    created: datetime | None = None


class Rotation(StrictModel):
    phase: RotationPhase = "standby"
    started: datetime | None = None
    last_completed: datetime | None = None


class CertAuthoritySpec(StrictModel):
    type: CAType
    cluster: str
    active_keys: list[CAKeyPair]
    additional_trusted_keys: list[CAKeyPair] = Field(default_factory=list)
    rotation: Rotation = Field(default_factory=Rotation)

    def trusted_keys(self) -> list[CAKeyPair]:
        return [*self.active_keys, *self.additional_trusted_keys]


class CertAuthority(Resource):
    KIND: ClassVar[str] = "cert_authority"
    kind: str = "cert_authority"
    spec: CertAuthoritySpec

    def without_secrets(self) -> CertAuthority:
        """A copy with every private key removed (for the API and clients)."""

        def strip(keys: list[CAKeyPair]) -> list[CAKeyPair]:
            return [k.model_copy(update={"private_key_encrypted": ""}) for k in keys]

        spec = self.spec.model_copy(
            update={
                "active_keys": strip(self.spec.active_keys),
                "additional_trusted_keys": strip(self.spec.additional_trusted_keys),
            }
        )
        return self.model_copy(update={"spec": spec})
