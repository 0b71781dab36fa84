"""Trusted devices (issue 13): inventory (``bctl devices``), enrollment and the authentication
ceremony (``bsh device enroll``, ``bsh login``). docs/device-trust.md.

Binary TPM structures travel as base64 of their marshalled form (TPM2B_PUBLIC, TPM2B_ID_OBJECT,
TPM2B_ENCRYPTED_SECRET, TPMT_SIGNATURE).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from bastion.contract.base import Body, Empty, Endpoint, Reply
from bastion.contract.core import Duration, UserCerts
from bastion.types.devices import Device, DeviceProfile, OSType

__all__ = [
    "DEVICES_ADD",
    "DEVICES_COMPLIANCE",
    "DEVICES_ENROLL_TOKEN",
    "DEVICES_GET",
    "DEVICES_LS",
    "DEVICES_RM",
    "DEVICE_AUTHN_BEGIN",
    "DEVICE_AUTHN_FINISH",
    "DEVICE_ENROLL_BEGIN",
    "DEVICE_ENROLL_FINISH",
    "DEVICE_FOR_GATE",
    "DEVICE_SOURCE_SYNC",
    "AddDevice",
    "AuthnBegin",
    "AuthnChallenge",
    "AuthnFinish",
    "DeviceFound",
    "DeviceList",
    "DeviceLookup",
    "DeviceReply",
    "EnrollBegin",
    "EnrollChallenge",
    "EnrollFinish",
    "EnrollToken",
    "EnrollTokenRequest",
    "SetCompliance",
    "SyncChange",
    "SyncReport",
    "SyncRequest",
]

Blob = Annotated[str, Field(max_length=8192)]


class AddDevice(Body):
    asset_tag: Annotated[str, Field(min_length=1, max_length=128)]
    os_type: OSType
    owner: str = ""


class DeviceReply(Reply):
    device: Device


class DeviceList(Reply):
    items: list[Device]


class Removed(Reply):
    deleted: str


class EnrollTokenRequest(Body):
    ttl: Duration | None = None
    """Default: the cluster's ``device_trust.enroll_token_ttl_seconds`` (1h)."""


class EnrollToken(Reply):
    token: str
    """Shown once: ``bsh device enroll --token=...`` on the device."""
    device_id: str
    expires: str


class SetCompliance(Body):
    status: Literal["compliant", "non_compliant", "unknown"]
    reason: str = ""


class EnrollBegin(Body):
    token: Annotated[str, Field(max_length=256)] = ""
    """Empty: auto-enrollment of the caller's own device, found by ``profile.serial`` (needs a
    role allowing ``device`` ``enroll``)."""
    attestation: Literal["tpm", "software"]
    ek_public: Blob = ""
    ek_cert: Blob = ""
    """PEM of the EK certificate when the TPM holds one."""
    ak_public: Blob = ""
    public_key: Blob = ""
    """Software attestation: the device key's PEM public key."""
    profile: DeviceProfile = Field(default_factory=DeviceProfile)


class EnrollChallenge(Reply):
    session: str
    attestation: str
    credential_blob: str = ""
    encrypted_secret: str = ""
    nonce: str = ""


class EnrollFinish(Body):
    session: Annotated[str, Field(min_length=1, max_length=64)]
    secret: Blob = ""
    """TPM: base64 of what ActivateCredential released."""
    signature: Blob = ""
    """Software: base64 DER ECDSA signature of the enrollment message."""


class AuthnBegin(Body):
    device_id: Annotated[str, Field(min_length=1, max_length=128)]


class AuthnChallenge(Reply):
    challenge: str
    nonce: str


class AuthnFinish(Body):
    challenge: Annotated[str, Field(min_length=1, max_length=512)]
    """From ``/v1/device-authn/begin``, or the ``device_challenge`` of the login's
    certificates (then ``device_id`` names the device)."""
    signature: Blob
    profile: DeviceProfile = Field(default_factory=DeviceProfile)
    device_id: Annotated[str, Field(max_length=128)] = ""


class DeviceLookup(Body):
    device_id: Annotated[str, Field(min_length=1, max_length=128)]


class DeviceFound(Reply):
    device: Device | None = None
    """None: no such device in the inventory."""


class SyncRequest(Body):
    dry_run: bool = False


class SyncChange(Reply):
    asset_tag: str
    device_id: str = ""
    """Empty for a device not added yet (dry run)."""
    changed: list[str] = Field(default_factory=list)
    owner: str = ""
    compliance: str = ""


class SyncReport(Reply):
    source: str
    dry_run: bool
    added: list[SyncChange]
    updated: list[SyncChange]
    missing: list[SyncChange]
    """Marked ``non_compliant`` (past the grace period)."""
    missing_in_grace: list[SyncChange]
    unchanged: int
    errors: list[str]


DEVICES_ADD = Endpoint(
    "POST", "/v1/devices", "user", "Register a device in the inventory",
    body=AddDevice, response=DeviceReply, status=201,
)  # fmt: skip
DEVICES_LS = Endpoint(
    "GET", "/v1/devices", "user", "List the device inventory", body=Empty, response=DeviceList
)
DEVICES_GET = Endpoint(
    "GET", "/v1/devices/{ref}", "user", "Read one device (by id or asset tag)",
    body=Empty, response=DeviceReply,
)  # fmt: skip
DEVICES_RM = Endpoint(
    "DELETE", "/v1/devices/{ref}", "user", "Remove a device (and its EK binding)",
    body=Empty, response=Removed,
)  # fmt: skip
DEVICES_ENROLL_TOKEN = Endpoint(
    "POST", "/v1/devices/{ref}/enroll-token", "user",
    "Create a one-time enrollment token for a device", body=EnrollTokenRequest,
    response=EnrollToken, status=201,
)  # fmt: skip
DEVICES_COMPLIANCE = Endpoint(
    "POST", "/v1/devices/{ref}/compliance", "user", "Set a device's compliance by hand",
    body=SetCompliance, response=DeviceReply,
)  # fmt: skip
DEVICE_ENROLL_BEGIN = Endpoint(
    "POST", "/v1/device-enroll/begin", "user",
    "Start enrollment: send the EK and a new AK; get a credential challenge",
    body=EnrollBegin, response=EnrollChallenge,
)  # fmt: skip
DEVICE_ENROLL_FINISH = Endpoint(
    "POST", "/v1/device-enroll/finish", "user",
    "Finish enrollment with the activated credential (or the software signature)",
    body=EnrollFinish, response=DeviceReply,
)  # fmt: skip
DEVICE_AUTHN_BEGIN = Endpoint(
    "POST", "/v1/device-authn/begin", "user", "A single-use device authentication challenge",
    body=AuthnBegin, response=AuthnChallenge,
)  # fmt: skip
DEVICE_AUTHN_FINISH = Endpoint(
    "POST", "/v1/device-authn/finish", "user",
    "Answer the challenge; get the caller's certificates re-issued with the device",
    body=AuthnFinish, response=UserCerts,
)  # fmt: skip
DEVICE_FOR_GATE = Endpoint(
    "POST", "/v1/device-trust/device", "host",
    "A device record for the device-trust check of a proxy in its own process",
    body=DeviceLookup, response=DeviceFound,
)  # fmt: skip
DEVICE_SOURCE_SYNC = Endpoint(
    "POST", "/v1/device-sources/{name}/sync", "user",
    "Import a device source's MDM export now (or show what it would change)",
    body=SyncRequest, response=SyncReport,
)  # fmt: skip
