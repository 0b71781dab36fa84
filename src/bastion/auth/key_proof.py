"""The device ceremony and the hardware-held key of a certificate request, checked in one place.

Layer: auth. Every request that asks for a user's login, renewal or per-session certificates
may carry the login's key material (the contract's ``DeviceBound``: the device's proof over a
fresh device challenge, and for ``--key-store=tpm`` the SSH key the device's attestation key
certified with TPM2_Certify over SHA-256 of that challenge). :func:`issue_bound` verifies the
proof (:meth:`DeviceService.authn_verify <bastion.auth.devices.DeviceService.authn_verify>`:
single use, audited as ``device.authn``), checks the certification against the enrolled AK
(:func:`bastion.auth.key_attest.certified_key_sha256`) and hands what the device vouches for to
:meth:`Issuer.issue_user <bastion.auth.issuer.Issuer.issue_user>`, where
``require_hardware_key`` is decided for every certificate. Password, invite, passkey and SSO
logins, renewals and per-session MFA certificates all come through here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

from bastion.auth.device_attest import spki_sha256
from bastion.auth.devices import DeviceService, LoginProof
from bastion.auth.issuer import UserCerts, parse_public_key
from bastion.auth.key_attest import certified_key_sha256
from bastion.auth.server import AuthServer
from bastion.errors import AccessDenied, BadParameter, BastionError, NotFound
from bastion.rbac.device_trust import KeyAttestation
from bastion.types.identity import Identity

__all__ = [
    "NO_BINDING",
    "KeyBinding",
    "attested_key",
    "binding_from_json",
    "binding_json",
    "check_binding",
    "issue_bound",
]


@dataclass(frozen=True, slots=True)
class KeyBinding:
    """What a certificate request says about its key (``DeviceBound`` on the wire)."""

    device: LoginProof | None = None
    """The machine's device proof over a fresh device challenge (the ping's)."""
    ssh_public_key: str = ""
    """A TPM-held key for the SSH certificate (the X.509 certificate stays on the request's
    ``public_key``), which ``device.key_certification`` must certify."""


NO_BINDING = KeyBinding()


def binding_json(binding: KeyBinding) -> dict[str, Any] | None:
    """``binding`` as JSON, for a request that issues later (an SSO login); None: nothing."""
    if binding == NO_BINDING:
        return None
    proof = binding.device
    return {
        "device": dataclasses.asdict(proof) if proof is not None else None,
        "ssh_public_key": binding.ssh_public_key,
    }


def binding_from_json(data: dict[str, Any] | None) -> KeyBinding:
    """The inverse of :func:`binding_json`."""
    if not data:
        return NO_BINDING
    proof = data.get("device")
    device = None
    if isinstance(proof, dict):
        cert = proof.get("key_certification")
        device = LoginProof(
            device_id=str(proof["device_id"]),
            challenge=str(proof["challenge"]),
            signature=str(proof["signature"]),
            profile={str(k): str(v) for k, v in (proof.get("profile") or {}).items()},
            key_certification=(str(cert[0]), str(cert[1]), str(cert[2])) if cert else None,
        )
    return KeyBinding(device=device, ssh_public_key=str(data.get("ssh_public_key") or ""))


def check_binding(binding: KeyBinding) -> None:
    """The request's shape, before anything is spent (pure).

    Raises:
        BadParameter: an ``ssh_public_key`` without the device proof certifying it, or a
            malformed key.
    """
    if not binding.ssh_public_key:
        return
    parse_public_key(binding.ssh_public_key)
    if binding.device is None or binding.device.key_certification is None:
        raise BadParameter(
            "ssh_public_key needs the device proof with its key_certification "
            "(--key-store=tpm on an enrolled machine)"
        )


async def attested_key(
    auth: AuthServer,
    identity: Identity,
    certification: tuple[str, str, str] | None = None,
    challenge: str = "",
    device_error: str = "",
) -> KeyAttestation | None:
    """What the device the request verified vouches for (``require_hardware_key``, the
    identity's ``key_attestation``): its enrolled credential, and the key its AK certified
    with TPM2_Certify over SHA-256 of the request's spent device ``challenge``.

    Raises:
        AccessDenied / BadParameter: a certification was sent and does not verify (the device
            did not verify: the message says to try again on the enrolled machine).
    """
    if not identity.device_id:
        if certification is not None:
            why = f" ({device_error})" if device_error else ""
            raise AccessDenied(
                f"key attestation: the device proof was refused{why}, so the TPM key "
                "cannot be attested; run 'bsh device status' and log in again on the "
                "enrolled machine"
            )
        return None
    try:
        device = await DeviceService(auth).store.get(identity.device_id)
    except NotFound:
        return None
    credential = device.spec.credential
    if credential is None or credential.id != identity.device_credential_id:
        return None
    certified = ""
    if certification is not None:
        if credential.attestation != "tpm":
            raise AccessDenied(
                "key attestation: this device is software-attested; a TPM-held key needs a "
                "device enrolled with its TPM"
            )
        certified = certified_key_sha256(
            credential.public_key_pem,
            *certification,
            qualifying_data=hashlib.sha256(challenge.encode()).digest(),
        )
    return KeyAttestation(
        device_id=device.name,
        device_attestation=credential.attestation,
        device_key_sha256=spki_sha256(credential.public_key_pem),
        certified_key_sha256=certified,
    )


async def issue_bound(
    auth: AuthServer,
    identity: Identity,
    public_key: str,
    remote_addr: str,
    binding: KeyBinding = NO_BINDING,
    *,
    second_factor: bool = False,
) -> UserCerts:
    """Verify ``binding``'s device proof for ``identity.user`` (the certificates then carry
    the device; a refused proof leaves them without it and ``UserCerts.device_error`` says
    why), attest its certified key, and issue.

    Without a proof the identity keeps the device fields it has (a renewal's re-checked
    device, the login certificate's device of a per-session certificate) but vouches for no
    key: under ``require_hardware_key`` such a request is refused by the issuer.

    Raises:
        BadParameter: see :func:`check_binding`.
        AccessDenied: a certification that does not verify, or ``require_hardware_key`` and
            the SSH key is not attested.
    """
    check_binding(binding)
    proof = binding.device
    device_error = ""
    attestation: KeyAttestation | None = None
    if proof is not None:  # the ceremony: verified (and spent) before the one issuance
        cleared = identity.model_copy(
            update={
                "device_id": "",
                "device_asset_tag": "",
                "device_credential_id": "",
                "device_attestation": "",
            }
        )
        try:
            fields = await DeviceService(auth).authn_verify(
                identity.user,
                proof.challenge,
                proof.signature,
                proof.profile,
                remote_addr,
                device_id=proof.device_id,
            )
        except BastionError as exc:  # audited as device.authn; the request stands
            device_error = exc.message
            identity = cleared
        else:
            identity = cleared.model_copy(update=fields)
        attestation = await attested_key(
            auth, identity, proof.key_certification, proof.challenge, device_error
        )
    certs = await auth.issuer.issue_user(
        identity,
        public_key,
        remote_addr,
        second_factor=second_factor,
        key_attestation=attestation,
        ssh_public_key=binding.ssh_public_key,
    )
    return dataclasses.replace(certs, device_error=device_error) if device_error else certs
