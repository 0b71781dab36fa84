"""Enrollment and authentication ceremonies, device side.

Layer: client. ``enroll`` runs ``bsh device enroll``: the EK and a fresh AK go to auth, the TPM
activates the credential auth made for them, and the machine's state is saved. ``authenticate``
runs after every ``bsh login``: auth's single-use nonce is signed by the AK together with the
fresh profile, and auth answers with the same certificates carrying the device.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.auth.device_attest import authn_message, enroll_message
from bastion.client.api import AuthClient
from bastion.client.device.local import (
    DeviceState,
    collect_profile,
    load_state,
    public_pem,
    save_state,
    software_key,
)
from bastion.client.device.tpm import TCTI_ENV, TPM, tcti_from_env
from bastion.client.device.tpm_key import (
    TPMKey,
    TPMKeyBlob,
    create_key,
    load_blob,
    qualifying_data,
    ssh_public_line,
)
from bastion.contract import core
from bastion.contract import devices as d
from bastion.errors import BadParameter, NotFound
from bastion.types.devices import DeviceProfile

__all__ = [
    "LoginKeys",
    "authenticate",
    "enroll",
    "enrolled_here",
    "fresh_challenge",
    "login_keys",
    "login_proof",
    "request_keys",
    "tpm_login_key",
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def enroll(
    client: AuthClient, home: Path, cluster: str, token: str, *, software: bool, tcti: str = ""
) -> tuple[d.DeviceReply, DeviceState]:
    """Enroll this machine with ``token``; saves and returns its state."""
    profile = DeviceProfile.model_validate(collect_profile())
    if software:
        key = software_key(home, cluster, create=True)
        begin = await client.send(
            d.DEVICE_ENROLL_BEGIN,
            d.EnrollBegin(
                token=token, attestation="software", public_key=public_pem(key), profile=profile
            ),
        )
        message = enroll_message(cluster, begin.session, base64.b64decode(begin.nonce))
        signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
        finish = d.EnrollFinish(session=begin.session, signature=_b64(signature))
        unique, tcti = b"", ""
    else:
        tcti = tcti or tcti_from_env()
        tpm = TPM(tcti)
        unique = secrets.token_bytes(32)
        ek_public, ek_cert, ak_public = tpm.enrollment_keys(unique)
        begin = await client.send(
            d.DEVICE_ENROLL_BEGIN,
            d.EnrollBegin(
                token=token,
                attestation="tpm",
                ek_public=ek_public,
                ek_cert=ek_cert,
                ak_public=ak_public,
                profile=profile,
            ),
        )
        secret = tpm.activate(unique, begin.credential_blob, begin.encrypted_secret)
        finish = d.EnrollFinish(session=begin.session, secret=_b64(secret))
    reply = await client.send(d.DEVICE_ENROLL_FINISH, finish)
    device = reply.device
    credential = device.spec.credential
    state = DeviceState(
        cluster=cluster,
        device_id=device.name,
        asset_tag=device.spec.asset_tag,
        credential_id=credential.id if credential else "",
        attestation=credential.attestation if credential else "",
        ak_unique=_b64(unique) if unique else "",
        tcti=tcti,
    )
    save_state(home, state)
    return reply, state


def sign_challenge(state: DeviceState, home: Path, message: bytes) -> str:
    """The device's signature of ``message`` (base64): the TPM's AK, or the software key."""
    if state.attestation == "software":
        key = software_key(home, state.cluster, create=False)
        return _b64(key.sign(message, ec.ECDSA(hashes.SHA256())))
    tpm = TPM(os.environ.get(TCTI_ENV) or state.tcti or tcti_from_env())
    return tpm.sign(base64.b64decode(state.ak_unique), message)


def login_proof(home: Path, cluster: str, challenge: str) -> dict[str, object] | None:
    """The device proof that travels with the login request (``Login.device``): the ping's
    ``challenge`` signed by this machine's key with its fresh profile; None when this machine
    is not enrolled in ``cluster`` (or there is no challenge)."""
    if not challenge:
        return None
    try:
        state = load_state(home, cluster)
    except NotFound:
        return None
    profile = DeviceProfile.model_validate(collect_profile()).model_dump()
    message = authn_message(cluster, challenge, b"", profile)
    return {
        "device_id": state.device_id,
        "challenge": challenge,
        "signature": sign_challenge(state, home, message),
        "profile": profile,
    }


async def authenticate(
    client: AuthClient, home: Path, cluster: str, challenge: str = ""
) -> core.UserCerts:
    """The device ceremony with the caller's fresh login certificate; returns the re-issued
    certificates carrying the device.

    Args:
        challenge: the ``device_challenge`` that came with the login's certificates: the
            answer is the only round trip. Empty (an older auth server, ``bsh device
            enroll``): a challenge is asked first (``/v1/device-authn/begin``).

    Raises:
        NotFound: this machine is not enrolled in ``cluster``.
        AccessDenied: auth refused the device (replayed, foreign signature, locked device).
    """
    state = load_state(home, cluster)
    profile = DeviceProfile.model_validate(collect_profile())
    if challenge:
        nonce = b""
    else:
        begun = await client.send(d.DEVICE_AUTHN_BEGIN, d.AuthnBegin(device_id=state.device_id))
        challenge, nonce = begun.challenge, base64.b64decode(begun.nonce)
    message = authn_message(cluster, challenge, nonce, profile.model_dump())
    signature = sign_challenge(state, home, message)
    return await client.send(
        d.DEVICE_AUTHN_FINISH,
        d.AuthnFinish(
            challenge=challenge,
            signature=signature,
            profile=profile,
            device_id=state.device_id,
        ),
    )


def tpm_login_key(
    home: Path, profile_dir: Path, cluster: str, challenge: str, blob: TPMKeyBlob | None = None
) -> tuple[TPMKeyBlob, str, dict[str, str]]:
    """``bsh login --key-store=tpm``: the profile's TPM-held SSH key (created at the first
    such login, reused after), its OpenSSH public line, and its certification by this
    machine's AK over the login's device ``challenge`` (``DeviceProof.key_certification``).
    The blob is not saved here: the caller saves it with the login's certificates (``blob``:
    certify that key, not yet saved, again).

    Raises:
        BadParameter: this machine is not enrolled with a TPM in ``cluster``, or the TPM
            cannot load the profile's key (another TPM's blob).
    """
    try:
        state = load_state(home, cluster)
    except NotFound:
        state = None
    if state is None or state.attestation != "tpm":
        raise BadParameter(
            f"--key-store=tpm needs this machine enrolled with its TPM in {cluster}: run "
            "bsh device enroll --token=... first (ask an admin for a token)"
        )
    if not challenge:
        raise BadParameter("--key-store=tpm: the cluster sent no device challenge to certify")
    tpm = TPM(os.environ.get(TCTI_ENV) or state.tcti or tcti_from_env())
    blob = blob or load_blob(profile_dir)
    if blob is None:
        blob = create_key(tpm)
    key = TPMKey(tpm, blob)
    key_public, attest, signature = key.certify(
        base64.b64decode(state.ak_unique), qualifying_data(challenge)
    )
    certification = {"key_public": key_public, "attest": attest, "signature": signature}
    return blob, ssh_public_line(key.public_key), certification


@dataclass(frozen=True, slots=True)
class LoginKeys:
    """The login's key material and its certification, for any request that asks for a user's
    certificates (the contract's ``DeviceBound``: logins of every kind, renewals, per-session
    MFA certificates): this machine's device proof, and with ``--key-store=tpm`` the TPM-held
    SSH key that the device's AK certified over the same challenge."""

    device: dict[str, object] | None = None
    """``DeviceBound.device`` (None: this machine is not enrolled in the cluster)."""
    ssh_public_key: str = ""
    """``DeviceBound.ssh_public_key``: the TPM-held key's OpenSSH line (software: empty)."""
    blob: TPMKeyBlob | None = None
    """The TPM key's blob (a new key at the profile's first such login), for the caller to
    save with the certificates."""

    def fields(self) -> dict[str, object]:
        """The request body's ``DeviceBound`` fields (none when there is nothing to send)."""
        out: dict[str, object] = {}
        if self.device is not None:
            out["device"] = self.device
        if self.ssh_public_key:
            out["ssh_public_key"] = self.ssh_public_key
        return out


def login_keys(
    home: Path,
    profile_dir: Path,
    cluster: str,
    challenge: str,
    key_store: str,
    blob: TPMKeyBlob | None = None,
) -> LoginKeys:
    """The device ceremony over ``challenge`` (a ping's ``device_challenge``) and, for
    ``key_store`` ``tpm``, the profile's TPM-held SSH key certified by the AK over the same
    challenge (``blob``: that TPM key, not yet saved). Blocks on the TPM (call it from a
    thread in async code).

    Raises:
        BadParameter: ``tpm`` and this machine is not enrolled with its TPM in ``cluster``
            (see :func:`tpm_login_key`).
        BastionError: the TPM failed (software: the caller may go on without a proof).
    """
    if key_store != "tpm":
        return LoginKeys(device=login_proof(home, cluster, challenge))
    blob, ssh_public, certification = tpm_login_key(home, profile_dir, cluster, challenge, blob)
    proof = login_proof(home, cluster, challenge)
    assert proof is not None  # tpm_login_key found the enrolled state and the challenge
    proof["key_certification"] = certification
    return LoginKeys(device=proof, ssh_public_key=ssh_public, blob=blob)


async def fresh_challenge(client: AuthClient) -> str:
    """A fresh device challenge from the ping (no state at auth; 2 minutes)."""
    ping = await client.send(core.PING)
    return ping.device_challenge


def enrolled_here(home: Path, profile_dir: Path, cluster: str, key_store: str) -> bool:
    """Whether this machine is enrolled in ``cluster`` (a request made with an existing login
    then carries the ceremony: fetch a challenge and call :func:`login_keys`).

    Raises:
        BadParameter: ``key_store`` is ``tpm`` and the machine is not enrolled (says to enroll).
    """
    try:
        load_state(home, cluster)
    except NotFound:
        if key_store == "tpm":
            tpm_login_key(home, profile_dir, cluster, "")  # raises: says to enroll
        return False
    return True


async def request_keys(
    client: AuthClient, home: Path, profile_dir: Path, cluster: str, key_store: str
) -> LoginKeys:
    """:func:`login_keys` over a fresh challenge of ``client``'s cluster, for a request made
    with an existing login (a renewal, a per-session MFA certificate). Nothing (no round trip)
    when this machine is not enrolled in ``cluster``."""
    if not enrolled_here(home, profile_dir, cluster, key_store):
        return LoginKeys()
    challenge = await fresh_challenge(client)
    return await asyncio.to_thread(login_keys, home, profile_dir, cluster, challenge, key_store)
