"""Trusted devices: the inventory record of a laptop or workstation, and the device-trust policy.

Layer: types (pure pydantic). A :class:`Device` is registered by an admin (``bctl devices add``),
enrolled once from the machine itself (``bsh device enroll``: its TPM proves that a fresh
attestation key lives next to the endorsement key, see :mod:`bastion.auth.devices`) and then
authenticated at every ``bsh login``. :class:`DeviceTrustPreference` is the cluster's policy, in
the auth preference (``device_trust:``); roles tighten it with ``device_trust_mode``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from bastion.types.meta import Resource, StrictModel

__all__ = [
    "ATTESTATIONS",
    "DEVICE_TRUST_MODES",
    "OS_TYPES",
    "Attestation",
    "Compliance",
    "Device",
    "DeviceCredential",
    "DeviceProfile",
    "DeviceSpec",
    "DeviceTrustMode",
    "DeviceTrustPreference",
    "EnrollStatus",
    "OSType",
]

OSType = Literal["linux", "macos", "windows"]
OS_TYPES: tuple[OSType, ...] = ("linux", "macos", "windows")
EnrollStatus = Literal["not_enrolled", "enrolled", "revoked"]
Attestation = Literal["tpm", "software"]
ATTESTATIONS: tuple[Attestation, ...] = ("tpm", "software")
DeviceTrustMode = Literal["off", "optional", "required"]
DEVICE_TRUST_MODES: tuple[DeviceTrustMode, ...] = ("off", "optional", "required")
"""From the most lenient to the strictest (the strictest of cluster and roles wins)."""

_ASSET_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_VERSION = re.compile(r"\d+(\.\d+){0,3}")


class DeviceCredential(StrictModel):
    """The key that authenticates the device: a TPM attestation key (or a software key)."""

    id: str
    """Credential id (written into certificates; the lock target is the device id)."""
    public_key_pem: str
    """The attestation key's public key (PEM SubjectPublicKeyInfo)."""
    attestation: Attestation
    """``tpm``: proven by credential activation against the endorsement key; ``software``: a
    key on disk, accepted only while the cluster allows it."""
    tpm_public: str = ""
    """base64 of the AK's marshalled TPM2B_PUBLIC (``tpm`` only): its TPM name is what
    credential activation proved."""
    ek_key_sha256: str = ""
    """SHA-256 (hex) of the endorsement key's SubjectPublicKeyInfo (``tpm`` only); one EK is
    bound to at most one device."""
    ek_cert_serial: str = ""
    """Serial of the EK certificate, when the TPM holds one."""


class DeviceProfile(StrictModel):
    """What the device reported about itself, at enrollment and at each authentication."""

    os_name: str = ""
    os_version: str = ""
    kernel: str = ""
    model: str = ""
    serial: str = ""
    hostname: str = ""
    bsh_version: str = ""


class Compliance(StrictModel):
    status: Literal["compliant", "non_compliant", "unknown"] = "unknown"
    reason: str = ""
    source: str = ""
    """Who said so (``manual``, or an inventory sync's name)."""
    updated: datetime | None = None


class DeviceSpec(StrictModel):
    asset_tag: str
    """The device's serial number or asset tag, unique in the inventory."""
    os_type: OSType
    owner: str = ""
    """The user who may enroll it (empty: any user holding the enrollment token)."""
    enroll_status: EnrollStatus = "not_enrolled"
    credential: DeviceCredential | None = None
    source: str = "manual"
    profile: DeviceProfile = Field(default_factory=DeviceProfile)
    compliance: Compliance = Field(default_factory=Compliance)
    last_seen: datetime | None = None
    enrolled_by: str = ""
    created_by: str = ""
    created: datetime | None = None
    enroll_token_hash: str = ""
    """SHA-256 (hex) of the pending one-time enrollment token (empty: none)."""
    enroll_token_expires: datetime | None = None

    @field_validator("asset_tag")
    @classmethod
    def _check_asset_tag(cls, value: str) -> str:
        if not _ASSET_TAG.fullmatch(value):
            raise ValueError(
                "asset tag must be 1 to 128 letters, digits or . _ : / - (starting with a "
                f"letter or digit), got {value[:40]!r}"
            )
        return value


class Device(Resource):
    """A device in the inventory; ``metadata.name`` is its id."""

    KIND: ClassVar[str] = "device"
    kind: str = "device"
    spec: DeviceSpec


class DeviceTrustPreference(StrictModel):
    """The cluster's device-trust policy (``cluster_auth_preference.spec.device_trust``)."""

    mode: DeviceTrustMode = "off"
    """``off``: devices are not considered; ``optional``: certificates carry device data when
    the machine is enrolled; ``required``: SSH access needs a trusted device."""
    allow_software: bool = False
    """Accept software attestation keys (no TPM). For tests and machines without a TPM; such
    devices are marked ``software`` in the inventory and in certificates."""
    min_os_version: dict[OSType, str] = Field(default_factory=dict)
    """Per OS type, the oldest OS version admitted under ``required`` (``linux: "6.1"``)."""
    require_compliance: bool = False
    """Under ``required``, only devices marked ``compliant`` are admitted."""
    enroll_token_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value

    @field_validator("min_os_version")
    @classmethod
    def _check_versions(cls, value: dict[OSType, str]) -> dict[OSType, str]:
        for os_type, version in value.items():
            if not _VERSION.fullmatch(version):
                raise ValueError(f"min_os_version.{os_type}: {version!r} is not like 13.4 or 6.1")
        return value
