"""WebAuthn registration, the pure half: the creation options the relying party sends, and the
checks of the authenticator's answer (the ``webauthn`` library's verification, then the
cluster's attestation and software-authenticator policy).

Layer: decisions (no IO, no clock: the time and ids are passed in). :mod:`.service` stores the
challenge and the resulting device.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from webauthn import generate_registration_options, options_to_json, verify_registration_response
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, parse_attestation_object
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import InvalidJSONStructure, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

import bastion.mfa.policy as policy
from bastion.errors import AccessDenied
from bastion.mfa.responses import explain
from bastion.mfa.softkey import SOFTWARE_AAGUID
from bastion.types.access import AuthPreferenceSpec
from bastion.types.mfa import MFADevice

__all__ = ["SUPPORTED_ALGS", "TIMEOUT_MS", "creation_options", "verified_device"]

TIMEOUT_MS = 60_000
SUPPORTED_ALGS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
ALL_FORMATS = tuple(AttestationFormat)


@dataclass(frozen=True, slots=True)
class Ceremony:
    """A pending registration as the service stored it."""

    challenge: str
    """base64url"""
    user_verification: str
    passwordless: bool = False
    """The user asked for a passkey (a device that may log in alone)."""


def creation_options(
    *,
    rp: policy.RelyingParty,
    cluster: str,
    user: str,
    user_handle: str,
    challenge: bytes,
    passwordless: bool,
    attestation: str,
    existing: Sequence[MFADevice],
) -> dict[str, Any]:
    """``PublicKeyCredentialCreationOptions`` JSON; the user's keys are excluded (a key is
    registered once) and ``credProps`` asks browsers to say whether the key made a passkey.

    A passwordless registration requires a discoverable credential and user verification; a
    second factor discourages a discoverable one (it would only fill the key's limited slots:
    it can never log in alone, see :attr:`MFADevice.passwordless`)."""
    options = generate_registration_options(
        rp_id=rp.rp_id,
        rp_name=f"Bastion {cluster}",
        user_name=user,
        user_id=base64url_to_bytes(user_handle),
        user_display_name=user,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.DIRECT
        if attestation == "direct"
        else AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED
            if passwordless
            else ResidentKeyRequirement.DISCOURAGED,
            require_resident_key=passwordless,
            user_verification=UserVerificationRequirement(
                "required" if passwordless else rp.user_verification
            ),
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(d.credential_id))
            for d in existing
            if d.type == "webauthn"
        ],
        supported_pub_key_algs=SUPPORTED_ALGS,
    )
    data: dict[str, Any] = json.loads(options_to_json(options))
    data["extensions"] = {"credProps": True}
    return data


def verified_device(
    *,
    response: dict[str, Any],
    ceremony: Ceremony,
    rp: policy.RelyingParty,
    spec: AuthPreferenceSpec,
    user: str,
    name: str,
    device_id: str,
    now: datetime,
) -> MFADevice:
    """Verify an attestation response and describe the new device.

    Raises:
        AccessDenied: ``registration refused: <reason>`` (origin, RP id, user verification,
        signature or chain, attestation policy, software authenticator not allowed).
    """
    wa = spec.webauthn
    roots = [r.encode() for r in wa.attestation_roots] if wa.attestation == "direct" else []
    try:
        verified = verify_registration_response(
            credential=response,
            expected_challenge=base64url_to_bytes(ceremony.challenge),
            expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins),
            require_user_verification=ceremony.user_verification == "required",
            supported_pub_key_algs=SUPPORTED_ALGS,
            pem_root_certs_bytes_by_fmt={fmt: roots for fmt in ALL_FORMATS} if roots else None,
        )
    except (InvalidRegistrationResponse, InvalidJSONStructure) as exc:
        raise AccessDenied(f"registration refused: {explain(exc)}") from None
    statement = parse_attestation_object(verified.attestation_object).att_stmt
    fmt = str(getattr(verified.fmt, "value", verified.fmt))
    refusal = policy.attestation_refusal(wa, fmt, bool(statement.x5c), verified.aaguid)
    if refusal:
        raise AccessDenied(f"registration refused: {refusal}")
    software = verified.aaguid == str(SOFTWARE_AAGUID)
    if software and not spec.allow_software_authenticator:
        raise AccessDenied(
            "registration refused: software authenticators are not allowed on this cluster "
            "(an admin can set allow_software_authenticator: true); use a security key"
        )
    props = (response.get("clientExtensionResults") or {}).get("credProps") or {}
    rk = props.get("rk") if isinstance(props, dict) else None
    if ceremony.passwordless and rk is False:
        raise AccessDenied(
            "registration refused: the authenticator did not make a passkey (a discoverable "
            "credential), so it could not log in alone; use a key that supports passkeys, or "
            "register it as a second factor (without --passwordless)"
        )
    return MFADevice(
        id=device_id,
        user=user,
        name=name,
        type="webauthn",
        added=now,
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=bytes_to_base64url(verified.credential_public_key),
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        attestation_format=fmt,
        # unreported (no credProps): discoverable only if it was required
        resident=bool(rk) or (rk is None and ceremony.passwordless),
        passwordless=ceremony.passwordless,
        software=software,
        user_verified=verified.user_verified,
    )
