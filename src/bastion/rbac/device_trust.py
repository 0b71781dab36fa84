"""Device trust decisions: which mode applies, and whether an identity's device passes.

Layer: policy (pure, like :mod:`bastion.rbac.checker`): values in, a value out, no IO and no
clock reads. The gate (:mod:`bastion.auth.gate`) loads the cluster preference, the identity's
roles and its device record and acts on :func:`device_refusal`.

Rules (docs/device-trust.md):

* the mode is the strictest of the cluster's ``device_trust.mode`` and the roles'
  ``device_trust_mode`` (``off`` < ``optional`` < ``required``);
* under ``required`` a certificate without trusted-device data is refused with
  :data:`DEVICE_REQUIRED_MESSAGE`; one with device data is refused when the device is no longer
  enrolled, holds another credential, is software-attested while the cluster no longer allows
  it, or fails the posture rules (minimum OS version per OS type, compliance required, maximum
  age of the last inventory sync; the caller passes ``now``);
* under ``optional`` and ``off`` nothing is refused here (locks still apply to the device id);
* a role with ``require_hardware_key`` gets certificates only for a key attested as
  TPM-resident (:func:`hardware_key_refusal`, decided by the issuer).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bastion.types.devices import (
    DEVICE_TRUST_MODES,
    Device,
    DeviceTrustMode,
    DeviceTrustPreference,
)
from bastion.types.identity import Identity

__all__ = [
    "DEVICE_REQUIRED_MESSAGE",
    "HARDWARE_KEY_MESSAGE",
    "DeviceRefusal",
    "KeyAttestation",
    "device_refusal",
    "hardware_key_refusal",
    "effective_device_mode",
    "parse_version",
    "posture_problems",
    "strictest",
    "sync_age_problem",
    "version_at_least",
]

DEVICE_REQUIRED_MESSAGE = (
    "access denied: this resource requires a trusted device; run 'bsh device enroll' "
    "(ask an admin for a token)"
)
HARDWARE_KEY_MESSAGE = (
    "access denied: your roles require a key held in your device's TPM "
    "(require_hardware_key); run 'bsh login --key-store=tpm' on your enrolled machine"
)
_RANK = {mode: rank for rank, mode in enumerate(DEVICE_TRUST_MODES)}


def strictest(modes: Iterable[DeviceTrustMode | None]) -> DeviceTrustMode:
    """The strictest of ``modes`` (None: unset, ignored); ``off`` when none is set."""
    best: DeviceTrustMode = "off"
    for mode in modes:
        if mode is not None and _RANK[mode] > _RANK[best]:
            best = mode
    return best


def effective_device_mode(
    cluster: DeviceTrustMode, roles: Iterable[DeviceTrustMode | None]
) -> DeviceTrustMode:
    """The mode for an identity: the cluster's, tightened by any of its roles."""
    return strictest([cluster, *roles])


def parse_version(text: str) -> tuple[int, ...] | None:
    """``"13.4.1"`` → ``(13, 4, 1)``; leading digits of each dot-separated part count
    (``"6.1.0-18-amd64"`` → ``(6, 1, 0)``); None when the text starts with no number."""
    parts: list[int] = []
    for piece in text.strip().split("."):
        digits = ""
        for ch in piece:
            if not "0" <= ch <= "9":  # ASCII only: "²".isdigit() is True
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts) if parts else None


def version_at_least(version: str, minimum: str) -> bool:
    """Is ``version`` at least ``minimum`` (missing parts count as 0)? An unparseable
    ``version`` never is (fail closed)."""
    have, want = parse_version(version), parse_version(minimum)
    if have is None:
        return False
    if want is None:
        return True
    width = max(len(have), len(want))
    return have + (0,) * (width - len(have)) >= want + (0,) * (width - len(want))


def _age(seconds: float) -> str:
    """``90061`` → ``"1d 1h"``; ``300`` → ``"5m"`` (whole units, the two largest)."""
    left = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])


def sync_age_problem(device: Device, max_age_seconds: int, now: datetime) -> str:
    """The maximum-sync-age rule: ``""`` when an inventory sync vouched for ``device`` within
    ``max_age_seconds`` of ``now`` (0: no rule), else why not. The time that counts is the
    last MDM check-in the export reported (``source_checkin``), else the last sync that found
    the device (``source_seen``); a check-in in the future counts as ``now``."""
    if max_age_seconds <= 0:
        return ""
    spec = device.spec
    last = spec.source_checkin or spec.source_seen
    limit = _age(max_age_seconds)
    if last is None:
        return f"no inventory sync has seen this device (maximum sync age {limit})"
    age = now - last
    if age <= timedelta(seconds=max_age_seconds):
        return ""
    return f"the inventory last saw this device {_age(age.total_seconds())} ago (maximum {limit})"


def posture_problems(device: Device, policy: DeviceTrustPreference, *, now: datetime) -> list[str]:
    """What keeps ``device`` from the posture ``policy`` asks for at ``now`` (empty: it
    passes)."""
    problems: list[str] = []
    spec = device.spec
    minimum = policy.min_os_version.get(spec.os_type)
    if minimum:
        version = spec.profile.os_version
        if not version_at_least(version, minimum):
            problems.append(
                f"{spec.os_type} version {version or 'unknown'} is below the minimum {minimum}"
            )
    if policy.require_compliance and spec.compliance.status != "compliant":
        why = f" ({spec.compliance.reason})" if spec.compliance.reason else ""
        problems.append(f"device is {spec.compliance.status}{why}")
    stale = sync_age_problem(device, policy.max_sync_age_seconds, now)
    if stale:
        problems.append(stale)
    return problems


@dataclass(frozen=True, slots=True)
class DeviceRefusal:
    reason: str
    """For audit: the whole truth."""
    message: str
    """For the user."""


def device_refusal(
    identity: Identity,
    mode: DeviceTrustMode,
    device: Device | None,
    policy: DeviceTrustPreference,
    *,
    now: datetime,
) -> DeviceRefusal | None:
    """Should this identity be refused for lack of a trusted device?

    Args:
        identity: from the verified certificate.
        mode: :func:`effective_device_mode` for the identity.
        device: the inventory record of ``identity.device_id`` (None: none, or no device id).
        policy: the cluster's device-trust preference (posture rules, software keys).
        now: the current time (the maximum sync age rule).
    """
    if mode != "required" or identity.kind == "host":
        return None
    if not identity.device_id:
        return DeviceRefusal("no trusted device in the certificate", DEVICE_REQUIRED_MESSAGE)
    what = f"device {identity.device_id}"
    if device is None:
        return DeviceRefusal(f"{what} is not in the inventory", DEVICE_REQUIRED_MESSAGE)
    spec = device.spec
    credential = spec.credential
    if spec.enroll_status != "enrolled" or credential is None:
        return DeviceRefusal(f"{what} is {spec.enroll_status}", DEVICE_REQUIRED_MESSAGE)
    if credential.id != identity.device_credential_id:
        return DeviceRefusal(
            f"{what}: the certificate names credential {identity.device_credential_id!r}, "
            f"the device holds {credential.id!r}",
            DEVICE_REQUIRED_MESSAGE,
        )
    if credential.attestation == "software" and not policy.allow_software:
        return DeviceRefusal(
            f"{what} has a software key and the cluster no longer allows software attestation",
            "access denied: this resource requires a TPM-attested device; software device keys "
            "are not allowed",
        )
    problems = posture_problems(device, policy, now=now)
    if problems:
        text = "; ".join(problems)
        return DeviceRefusal(
            f"{what} fails the device posture: {text}",
            f"access denied: your device does not meet the device policy: {text}",
        )
    return None


@dataclass(frozen=True, slots=True)
class KeyAttestation:
    """What auth verified about a certificate's public key (SHA-256 of SubjectPublicKeyInfo,
    hex): the device that vouched for it and how."""

    device_id: str
    device_attestation: str
    """The device credential's attestation: ``tpm`` or ``software``."""
    device_key_sha256: str = ""
    """The device's enrolled credential (its AK)."""
    certified_key_sha256: str = ""
    """A key the device's AK certified with TPM2_Certify, the certification verified
    (:func:`bastion.auth.key_attest.certified_key_sha256`)."""


def hardware_key_refusal(
    required: bool, key_sha256: str, attestation: KeyAttestation | None
) -> DeviceRefusal | None:
    """Should a certificate for the key ``key_sha256`` be refused under
    ``require_hardware_key`` (``required``: any of the user's roles sets it)?

    Allowed only when a TPM-attested device vouched for that very key: it is the device's
    enrolled TPM credential or a key its AK certified as TPM-resident. A software-attested
    device never vouches (its key lives on disk)."""
    if not required:
        return None
    if attestation is None or not attestation.device_id:
        return DeviceRefusal("no hardware key attestation for the key", HARDWARE_KEY_MESSAGE)
    what = f"device {attestation.device_id}"
    if attestation.device_attestation != "tpm":
        return DeviceRefusal(
            f"{what} is {attestation.device_attestation or 'not'}-attested, not a TPM",
            HARDWARE_KEY_MESSAGE,
        )
    vouched = {attestation.device_key_sha256, attestation.certified_key_sha256} - {""}
    if not key_sha256 or key_sha256 not in vouched:
        return DeviceRefusal(
            f"{what}: the key {key_sha256[:16] or '(none)'} is neither the device's TPM "
            "credential nor certified by its attestation key",
            HARDWARE_KEY_MESSAGE,
        )
    return None
