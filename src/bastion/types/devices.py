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
    "DeviceSource",
    "DeviceSpec",
    "DeviceTrustMode",
    "DeviceTrustPreference",
    "EnrollStatus",
    "OSType",
    "compliance_lock_name",
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
    ek_cert_issuer: str = ""
    """The manufacturer CA the EK certificate chained to (``device_trust.ek_ca_bundle`` set)."""


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
    source_seen: datetime | None = None
    """When the inventory sync (``source``) last found the device in its export."""
    source_checkin: datetime | None = None
    """The device's last check-in with the MDM, as the export reports it."""

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


def compliance_lock_name(device_id: str) -> str:
    """The lock a non-compliant device carries (created and removed with its compliance)."""
    return f"device-noncompliant-{device_id}"


class DeviceSource(StrictModel):
    """An inventory sync: an MDM export (CSV or JSON) read from a file on the auth server or an
    HTTPS URL, on a schedule (docs/device-trust.md, "Inventory sync")."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    """Recorded as the devices' ``source`` and compliance source."""
    url: str
    """``https://...`` or ``file:///path`` (a path on the auth server)."""
    format: Literal["csv", "json"] = "csv"
    columns: dict[str, str] = Field(default_factory=dict)
    """Our field (``serial``, ``os``, ``os_version``, ``model``, ``user``, ``compliance``,
    ``last_checkin``) -> the export's column name; unmapped fields use their own names."""
    interval_seconds: int = Field(default=3600, ge=0, le=7 * 24 * 3600)
    """How often auth imports the export (0 stops the schedule: ``bctl devices sync`` only)."""
    grace_seconds: int = Field(default=7 * 24 * 3600, ge=0)
    """A device missing from the export this long is marked ``non_compliant`` (not deleted)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers for the download (``Authorization: Bearer ...``)."""
    ca_file: str = ""
    """PEM bundle to verify the HTTPS server (default: the system's CAs)."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("https://", "file:///", "http://127.0.0.1", "http://localhost")):
            raise ValueError("url must be https://..., or file:///path on the auth server")
        return value


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
    max_sync_age_seconds: int = Field(default=0, ge=0, le=365 * 24 * 3600)
    """Under ``required``, a device is admitted only while an inventory sync vouched for it
    this recently: its last MDM check-in as the export reports it (``source_checkin``), else
    the last sync that found it (``source_seen``). 0: no such rule; a device no sync ever
    found is refused while it is set."""
    enroll_token_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    ek_ca_bundle: str = ""
    """Manufacturer CA certificates (PEM text, or the absolute path of a PEM file on the auth
    server). Set: TPM enrollment requires an EK certificate chaining to one of them."""
    fetch_ek_intermediates: bool = False
    """With ``ek_ca_bundle`` set: fetch an EK certificate's missing intermediate CA from the URL
    in the certificate (Authority Information Access; http/https, 5 s, 64 KiB, 2 hops) and keep
    it. Roots are never fetched: trust comes from ``ek_ca_bundle`` alone. False: no egress;
    put the vendors' intermediates in the bundle."""
    sources: list[DeviceSource] = Field(default_factory=list)
    """Inventory syncs from MDM exports (``bctl devices sync --source=NAME``)."""

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, value: list[DeviceSource]) -> list[DeviceSource]:
        names = [source.name for source in value]
        if len(set(names)) != len(names):
            raise ValueError("device source names must be unique")
        return value

    @field_validator("ek_ca_bundle")
    @classmethod
    def _check_bundle(cls, value: str) -> str:
        text = value.strip()
        if text and not text.startswith("-----BEGIN CERTIFICATE-----") and not text.startswith("/"):
            raise ValueError("ek_ca_bundle: PEM certificates, or an absolute path on auth servers")
        return text

    @field_validator("min_os_version")
    @classmethod
    def _check_versions(cls, value: dict[OSType, str]) -> dict[OSType, str]:
        for os_type, version in value.items():
            if not _VERSION.fullmatch(version):
                raise ValueError(f"min_os_version.{os_type}: {version!r} is not like 13.4 or 6.1")
        return value
