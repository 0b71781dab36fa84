"""Trusted devices: inventory, enrollment by TPM credential activation, the authentication
ceremony that puts a device into certificates, and the gate's device-trust check.

Layer: auth. Every change is one audited transaction (:meth:`AuthServer.audited`):

* ``device.create`` / ``device.delete`` / ``device.enroll_token`` (inventory);
* ``device.enroll``: the device becomes ``enrolled`` with its credential, its one-time token is
  spent, its enrollment session is deleted and its EK is bound (``device_eks/<sha256>``, a
  create: an EK bound to another device fails the whole transaction);
* ``device.authn``: last seen and profile updated, the single-use challenge deleted; a replayed
  challenge finds nothing to delete, so it fails (and is audited as a failure).

Enrollment (``bsh device enroll``): the device sends its EK and a fresh AK; auth answers with a
credential made for that pair (:func:`~bastion.auth.device_attest.make_challenge`); only the TPM
holding the EK releases the secret, and only for the AK it names. Authentication (every
``bsh login``): auth sends a fresh nonce, the AK signs it with the device's profile, auth checks
the signature against the enrolled key and re-issues the caller's certificates (same key, same
expiry) with the device in their identity document.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from bastion.auth.device_attest import (
    EKChainError,
    EKPublic,
    authn_message,
    b64,
    enroll_message,
    load_ek_roots,
    make_challenge,
    parse_ak,
    parse_ek,
    unb64,
    verify_ek_chain,
    verify_signature,
)
from bastion.auth.device_challenge import challenge_key, is_challenge_token, open_challenge
from bastion.auth.ek_fetch import IssuerFetchError, complete_chain, issuer_cache
from bastion.auth.issuer import UserCerts
from bastion.auth.server import AuthServer
from bastion.backend.base import Create, Delete, Item, Op
from bastion.clock import Clock, SystemClock
from bastion.errors import (
    AccessDenied,
    AlreadyExists,
    BadParameter,
    CompareFailed,
    ConnectionProblem,
    NotFound,
)
from bastion.locks.matcher import LockDecision, LockTargets
from bastion.rbac.device_trust import (
    DeviceRefusal,
    device_refusal,
    effective_device_mode,
    posture_problems,
)
from bastion.rbac.role_map import remote_device_refusal
from bastion.services.cache import ResourceCache
from bastion.services.credentials import hash_secret, secrets_equal
from bastion.services.store import RESOURCE_PREFIXES, ResourceStore
from bastion.types.access import AuthPreference, Lock, LockSpec, LockTarget
from bastion.types.devices import (
    Compliance,
    Device,
    DeviceCredential,
    DeviceProfile,
    DeviceSpec,
    DeviceTrustMode,
    DeviceTrustPreference,
    OSType,
    compliance_lock_name,
)
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

__all__ = [
    "CHALLENGE_TTL",
    "AuthDeviceTrust",
    "DeviceService",
    "DeviceTrustCheck",
    "EnrollChallenge",
    "LoginProof",
    "NewEnrollToken",
    "cached_device_trust",
    "compliance_lock",
    "compliance_ops",
    "os_problems",
]

CHALLENGE_PREFIX = "device_challenges/"
"""Single-use enrollment sessions and authentication challenges (with an expiry)."""
EK_PREFIX = "device_eks/"
"""``device_eks/<sha256 of the EK>`` -> the device id it is bound to."""
CHALLENGE_TTL = timedelta(minutes=2)
_TOKEN_SEP = "."


@dataclass(frozen=True, slots=True)
class NewEnrollToken:
    token: str
    device: Device


@dataclass(frozen=True, slots=True)
class LoginProof:
    """A machine's device proof sent with its login request: the ping's challenge signed by
    the device's key with its fresh profile (:meth:`DeviceService.authn_verify`)."""

    device_id: str
    challenge: str
    signature: str
    profile: dict[str, str]
    key_certification: tuple[str, str, str] | None = None
    """TPM2_Certify of the login's SSH key by the device's AK: (key_public, attest,
    signature), base64 (:func:`bastion.auth.key_attest.certified_key_sha256`)."""


@dataclass(frozen=True, slots=True)
class EnrollChallenge:
    session: str
    attestation: str
    credential_blob: str = ""
    encrypted_secret: str = ""
    nonce: str = ""
    """Software attestation: base64 nonce the device signs (with :func:`enroll_message`)."""


def _profile(data: dict[str, Any] | None) -> DeviceProfile:
    try:
        return DeviceProfile.model_validate(data or {})
    except ValueError:
        raise BadParameter("profile: unknown or malformed fields") from None


def compliance_lock(device: Device, compliance: Compliance, now: datetime) -> Lock:
    """The lock a non-compliant device carries: its live sessions end through the lock path
    (every proxy and node watching locks) and its ceremony is refused until it is compliant."""
    why = f": {compliance.reason}" if compliance.reason else ""
    return Lock(
        metadata=Metadata(
            name=compliance_lock_name(device.name),
            description=f"device {device.spec.asset_tag} is non-compliant ({compliance.source})",
        ),
        spec=LockSpec(
            target=LockTarget(device=device.name),
            message=f"device {device.spec.asset_tag} is non-compliant{why}",
            created_by="bastion",
            created=now,
        ),
    )


def os_problems(device: Device, profile: DeviceProfile, policy: DeviceTrustPreference) -> list[str]:
    """The minimum-OS posture of ``device`` reporting ``profile`` (compliance and sync age not
    considered: the gate checks those at every access)."""
    probe = device.model_copy(deep=True)
    probe.spec.profile = profile
    only_os = policy.model_copy(update={"require_compliance": False, "max_sync_age_seconds": 0})
    return posture_problems(probe, only_os, now=datetime.min)


async def compliance_ops(auth: AuthServer, device: Device) -> list[Op]:
    """The lock ops that go with ``device``'s (new) compliance, in the same transaction:
    non-compliant puts :func:`compliance_lock`, anything else removes it."""
    locks = auth.locks
    name = compliance_lock_name(device.name)
    if device.spec.compliance.status == "non_compliant":
        now = auth.clock.now()
        return [locks.put_op(compliance_lock(device, device.spec.compliance, now))]
    try:
        existing = await locks.get(name)
    except NotFound:
        return []
    return [locks.delete_op(name, existing.metadata.revision)]


class DeviceService:
    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth
        self.store: ResourceStore[Device] = ResourceStore(
            auth.deps.backend, Device, RESOURCE_PREFIXES["device"]
        )
        self._backend = auth.deps.backend
        self._challenge_key = challenge_key(auth.deps.kek)

    # ---- inventory ---------------------------------------------------------------------------

    async def add(self, asset_tag: str, os_type: OSType, owner: str, actor: str) -> Device:
        try:
            spec = DeviceSpec(asset_tag=asset_tag, os_type=os_type, owner=owner)
        except ValueError as exc:
            raise BadParameter(str(exc).splitlines()[-1].strip()) from None
        for existing in await self.store.list():
            if existing.spec.asset_tag == asset_tag:
                raise AlreadyExists(
                    f"a device with asset tag {asset_tag!r} exists: {existing.name}"
                )
        spec.created_by, spec.created = actor, self.auth.clock.now()
        device = Device(metadata=Metadata(name=str(uuid.uuid4())), spec=spec)
        done = await self.auth.audited(
            "device.create",
            [self.store.create_op(device)],
            actor,
            f"device/{device.name}",
            asset_tag=asset_tag,
            os_type=os_type,
            owner=owner,
        )
        return self.store.written(device, done.items[0])

    async def list(self) -> list[Device]:
        return sorted(await self.store.list(), key=lambda d: d.spec.asset_tag)

    async def get(self, ref: str) -> Device:
        """A device by id or asset tag.

        Raises:
            NotFound: neither.
        """
        try:
            return await self.store.get(ref)
        except NotFound:
            pass
        for device in await self.store.list():
            if device.spec.asset_tag == ref:
                return device
        raise NotFound(f"no device with id or asset tag {ref!r} (bctl devices ls lists them)")

    async def remove(self, ref: str, actor: str) -> Device:
        device = await self.get(ref)
        ops: list[Op] = [self.store.delete_op(device.name, device.metadata.revision)]
        credential = device.spec.credential
        if credential is not None and credential.ek_key_sha256:
            ops.append(Delete(EK_PREFIX + credential.ek_key_sha256))
        await self.auth.audited(
            "device.delete", ops, actor, f"device/{device.name}", asset_tag=device.spec.asset_tag
        )
        return device

    async def set_compliance(self, ref: str, status: str, reason: str, actor: str) -> Device:
        device = await self.get(ref)

        async def change(current: Device) -> tuple[Device, list[Op]]:
            updated = current.model_copy(deep=True)
            updated.spec.compliance = Compliance(
                status=status,
                reason=reason,
                source="manual",
                updated=self.auth.clock.now(),
            )
            return updated, await compliance_ops(self.auth, updated)

        try:
            result, _ = await self.auth.audited_modify(
                self.store,
                device.name,
                change,
                "device.compliance",
                actor,
                f"device/{device.name}",
                status=status,
                reason=reason,
            )
        except ValueError as exc:
            raise BadParameter(f"compliance: {exc}") from None
        return result

    async def create_enroll_token(
        self, ref: str, ttl: timedelta | None, actor: str
    ) -> NewEnrollToken:
        device = await self.get(ref)
        if device.spec.enroll_status == "enrolled":
            raise BadParameter(
                f"device {device.name} is already enrolled; remove it (bctl devices rm) and add "
                "it again to enroll another credential"
            )
        pref = (await self.auth.auth_preference()).spec.device_trust
        ttl = ttl or timedelta(seconds=pref.enroll_token_ttl_seconds)
        secret = secrets.token_urlsafe(24)
        expires = self.auth.clock.now() + ttl

        async def change(current: Device) -> tuple[Device, list[Op]]:
            updated = current.model_copy(deep=True)
            updated.spec.enroll_token_hash = hash_secret(secret)
            updated.spec.enroll_token_expires = expires
            return updated, []

        result, _ = await self.auth.audited_modify(
            self.store,
            device.name,
            change,
            "device.enroll_token",
            actor,
            f"device/{device.name}",
            expires=expires.isoformat(),
        )
        return NewEnrollToken(token=f"{device.name}{_TOKEN_SEP}{secret}", device=result)

    # ---- enrollment --------------------------------------------------------------------------

    async def _token_device(self, token: str) -> Device:
        device_id, _, secret = token.partition(_TOKEN_SEP)
        try:
            device = await self.store.get(device_id) if device_id and secret else None
        except (NotFound, BadParameter):
            device = None
        spec = device.spec if device is not None else None
        if (
            device is None
            or spec is None
            or not spec.enroll_token_hash
            or not secrets_equal(spec.enroll_token_hash, hash_secret(secret))
            or spec.enroll_token_expires is None
            or spec.enroll_token_expires <= self.auth.clock.now()
        ):
            raise AccessDenied("device enrollment token is invalid, expired or already used")
        return device

    async def _auto_device(self, user: str, serial: str) -> Device:
        """Auto-enrollment (the caller's role allows ``device`` ``enroll``): the caller's own,
        not yet enrolled device, known to the inventory by the serial the machine reports."""
        if not serial:
            raise AccessDenied(
                "auto-enrollment needs the machine's serial number (none was found); ask an "
                "admin for a token (bctl devices enroll)"
            )
        for device in await self.store.list():
            if device.spec.asset_tag != serial:
                continue
            if device.spec.owner != user:
                raise AccessDenied(
                    f"device {serial} is not registered to you; auto-enrollment is for your own "
                    "devices (ask an admin for a token)"
                )
            if device.spec.enroll_status == "enrolled":
                raise AccessDenied(f"device {serial} is already enrolled")
            return device
        raise AccessDenied(
            f"no device with serial {serial} in the inventory; auto-enrollment is for devices the "
            "inventory knows (ask an admin to add it, or for a token)"
        )

    async def _refuse(self, event: str, user: str, target: str, reason: str, **fields: Any) -> None:
        await self.auth.audit.emit(
            event, outcome="failure", user=user, target=target, reason=reason, **fields
        )

    async def enroll_begin(
        self,
        user: str,
        token: str,
        attestation: str,
        ek_public: str,
        ek_cert: str,
        ak_public: str,
        software_public_key: str,
        profile: dict[str, Any] | None,
        remote_addr: str,
    ) -> EnrollChallenge:
        try:
            if token:
                device = await self._token_device(token)
            else:
                device = await self._auto_device(user, _profile(profile).serial)
        except AccessDenied as exc:
            await self._refuse(
                "device.enroll", user, "device", exc.message, remote_addr=remote_addr
            )
            raise
        target = f"device/{device.name}"
        if device.spec.owner and device.spec.owner != user:
            reason = f"device belongs to {device.spec.owner}"
            await self._refuse("device.enroll", user, target, reason, remote_addr=remote_addr)
            raise AccessDenied(f"this device is registered to another user; {reason}")
        pref = (await self.auth.auth_preference()).spec.device_trust
        session = uuid.uuid4().hex
        record: dict[str, Any] = {
            "kind": "enroll",
            "user": user,
            "device": device.name,
            "token_hash": device.spec.enroll_token_hash,
            "auto": not token,
            "attestation": attestation,
            "profile": _profile(profile).model_dump(),
        }
        if attestation == "software":
            if not pref.allow_software:
                reason = "software attestation is not allowed"
                await self._refuse("device.enroll", user, target, reason, remote_addr=remote_addr)
                raise AccessDenied(
                    "this cluster accepts only TPM-attested devices (no TPM found here); an admin "
                    "can allow software keys with device_trust.allow_software"
                )
            try:
                from bastion.auth.device_attest import spki_sha256

                spki_sha256(software_public_key)
            except (ValueError, TypeError):
                raise BadParameter("public_key: not a PEM public key") from None
            nonce = secrets.token_bytes(32)
            record.update(public_key=software_public_key, nonce=b64(nonce))
            await self._put_challenge(session, record)
            return EnrollChallenge(session=session, attestation="software", nonce=b64(nonce))
        if attestation != "tpm":
            raise BadParameter("attestation must be tpm or software")
        ek = parse_ek(ek_public, ek_cert)
        ak = parse_ak(ak_public)
        issuer = ""
        if pref.ek_ca_bundle:
            try:
                issuer = await self._ek_issuer(
                    ek, pref.ek_ca_bundle, fetch=pref.fetch_ek_intermediates
                )
            except AccessDenied as exc:
                await self._refuse(
                    "device.enroll", user, target, exc.message, remote_addr=remote_addr
                )
                raise
        bound = await self._ek_owner(ek.key_sha256)
        if bound and bound != device.name:
            reason = f"endorsement key already bound to device {bound}"
            await self._refuse("device.enroll", user, target, reason, remote_addr=remote_addr)
            raise AccessDenied(f"this TPM is already enrolled as another device ({bound})")
        secret = secrets.token_bytes(32)
        blob, enc = make_challenge(ek, ak, secret)
        record.update(
            secret_sha256=hashlib.sha256(secret).hexdigest(),
            public_key=ak.pem,
            tpm_public=ak_public,
            ek_key_sha256=ek.key_sha256,
            ek_cert_serial=ek.cert_serial,
            ek_cert_issuer=issuer,
        )
        await self._put_challenge(session, record)
        return EnrollChallenge(
            session=session, attestation="tpm", credential_blob=blob, encrypted_secret=enc
        )

    async def enroll_finish(
        self, user: str, session: str, secret: str, signature: str, remote_addr: str
    ) -> Device:
        record, item = await self._challenge(session, "enroll", user)
        target = f"device/{record['device']}"
        if record["attestation"] == "tpm":
            got = hashlib.sha256(unb64(secret, "secret")).hexdigest()
            proven = secrets_equal(got, str(record["secret_sha256"]))
        else:
            message = enroll_message(self.auth.cluster, session, unb64(record["nonce"], "nonce"))
            proven = verify_signature(record["public_key"], "software", message, signature)
        if not proven:
            reason = "credential activation failed (wrong secret or signature)"
            await self._refuse("device.enroll", user, target, reason, remote_addr=remote_addr)
            raise AccessDenied(
                "device enrollment failed: the TPM could not prove it holds the attestation key"
            )
        credential = DeviceCredential(
            id=uuid.uuid4().hex[:16],
            public_key_pem=record["public_key"],
            attestation=record["attestation"],
            tpm_public=record.get("tpm_public", ""),
            ek_key_sha256=record.get("ek_key_sha256", ""),
            ek_cert_serial=record.get("ek_cert_serial", ""),
            ek_cert_issuer=record.get("ek_cert_issuer", ""),
        )
        now = self.auth.clock.now()

        async def change(current: Device) -> tuple[Device, list[Op]]:
            if (
                current.spec.enroll_token_hash != record["token_hash"]
                or current.spec.enroll_status == "enrolled"
            ):
                raise AccessDenied("device enrollment token is invalid, expired or already used")
            await self._backend.get(item.key)  # NotFound: finished meanwhile
            updated = current.model_copy(deep=True)
            spec = updated.spec
            spec.enroll_status, spec.credential = "enrolled", credential
            spec.enroll_token_hash, spec.enroll_token_expires = "", None
            spec.profile = DeviceProfile.model_validate(record["profile"])
            spec.last_seen, spec.enrolled_by = now, user
            extra: list[Op] = [Delete(item.key, item.revision)]
            if credential.ek_key_sha256:
                value = json.dumps({"device": current.name}).encode()
                extra.append(Create(Item(EK_PREFIX + credential.ek_key_sha256, value)))
            return updated, extra

        try:
            device, _ = await self.auth.audited_modify(
                self.store,
                record["device"],
                change,
                "device.enroll",
                user,
                target,
                attestation=credential.attestation,
                credential_id=credential.id,
                ek_key_sha256=credential.ek_key_sha256,
                auto_enrollment=bool(record.get("auto")),
                remote_addr=remote_addr,
            )
        except AlreadyExists as exc:
            if exc.key is None or not exc.key.startswith(EK_PREFIX):
                raise
            bound = await self._ek_owner(credential.ek_key_sha256)
            reason = f"endorsement key already bound to device {bound}"
            await self._refuse("device.enroll", user, target, reason, remote_addr=remote_addr)
            raise AccessDenied(
                f"this TPM is already enrolled as another device ({bound})"
            ) from None
        except (NotFound, CompareFailed):
            reason = "enrollment session already used"
            await self._refuse("device.enroll", user, target, reason, remote_addr=remote_addr)
            raise AccessDenied("device enrollment failed: the session was already used") from None
        except AccessDenied as exc:
            await self._refuse("device.enroll", user, target, exc.message, remote_addr=remote_addr)
            raise
        return device

    # ---- authentication ceremony -------------------------------------------------------------

    async def authn_challenge(self, identity: Identity, device_id: str) -> tuple[str, str]:
        """A fresh single-use challenge for ``device_id``: (challenge id, base64 nonce)."""
        if identity.kind not in ("user", "bot"):
            raise AccessDenied("device authentication is for users' certificates")
        device = await self.get(device_id)
        if device.spec.enroll_status != "enrolled" or device.spec.credential is None:
            raise AccessDenied(f"device {device.name} is not enrolled; run bsh device enroll")
        challenge = uuid.uuid4().hex
        nonce = secrets.token_bytes(32)
        record = {
            "kind": "authn",
            "user": identity.user,
            "device": device.name,
            "credential": device.spec.credential.id,
            "nonce": b64(nonce),
        }
        await self._put_challenge(challenge, record)
        return challenge, b64(nonce)

    async def _token_challenge(
        self, user: str, token: str, device_id: str
    ) -> tuple[dict[str, Any], Op, bytes]:
        """A challenge that came with the login's certificates or the ping: (record, the op
        that spends it, the nonce signed with it)."""
        opened = open_challenge(self._challenge_key, token, user, self.auth.clock.now())
        if opened is None:
            raise AccessDenied("unknown, expired or foreign device challenge")
        if not device_id:
            raise BadParameter("device_id: needed with a challenge from the login response")
        device = await self.get(device_id)
        credential = device.spec.credential
        if device.spec.enroll_status != "enrolled" or credential is None:
            raise AccessDenied(f"device {device.name} is not enrolled; run bsh device enroll")
        record = {"device": device.name, "credential": credential.id}
        spent = Item(
            CHALLENGE_PREFIX + "used-" + opened.nonce, b'{"kind": "used"}', expires=opened.expires
        )
        return record, Create(spent), b""

    async def _stored_challenge(
        self, user: str, challenge: str
    ) -> tuple[dict[str, Any], Op, bytes]:
        """A challenge from ``/v1/device-authn/begin`` (stored): (record, the op that spends
        it, its nonce)."""
        record, item = await self._challenge(challenge, "authn", user)
        return record, Delete(item.key, item.revision), unb64(record["nonce"], "nonce")

    async def authn_finish(
        self,
        identity: Identity,
        challenge: str,
        signature: str,
        profile: dict[str, Any] | None,
        public_key: str,
        remote_addr: str,
        device_id: str = "",
    ) -> UserCerts:
        """Verify the device's answer and re-issue the caller's certificates with the device.

        ``challenge`` is one from :meth:`authn_challenge` (stored, two round trips) or one that
        came with the login's certificates (:mod:`bastion.auth.device_challenge`, then
        ``device_id`` names the device: one round trip). Either answers once.

        Raises:
            AccessDenied: unknown, used or foreign challenge; a signature that does not verify;
                a locked or no longer enrolled device. Each audited as ``device.authn`` failure.
        """
        fields = await self.authn_verify(
            identity.user, challenge, signature, profile, remote_addr, device_id
        )
        augmented = identity.model_copy(update=fields)
        return await self.auth.issuer.issue_user(augmented, public_key, remote_addr)

    async def authn_verify(
        self,
        user: str,
        challenge: str,
        signature: str,
        profile: dict[str, Any] | None,
        remote_addr: str,
        device_id: str = "",
    ) -> dict[str, str]:
        """Verify ``user``'s device answer and record it; returns the identity fields that put
        the device into certificates (``device_id``, ``device_asset_tag``,
        ``device_credential_id``, ``device_attestation``), for the caller's one issuance.

        The challenge is spent (a stored one deleted, a token's nonce recorded until its
        expiry) in the same audited transaction (``device.authn``) as the device's last seen,
        profile and posture-driven compliance. Raises as :meth:`authn_finish`."""
        try:
            if is_challenge_token(challenge):
                record, spend, nonce = await self._token_challenge(user, challenge, device_id)
            else:
                record, spend, nonce = await self._stored_challenge(user, challenge)
        except (AccessDenied, NotFound) as exc:
            await self._refuse("device.authn", user, "device", exc.message, remote_addr=remote_addr)
            raise
        target = f"device/{record['device']}"
        fresh = _profile(profile)
        device = await self.get(record["device"])
        credential = device.spec.credential
        message = authn_message(self.auth.cluster, challenge, nonce, fresh.model_dump())
        if (
            credential is None
            or credential.id != record["credential"]
            or not verify_signature(
                credential.public_key_pem, credential.attestation, message, signature
            )
        ):
            reason = "device signature does not verify against the enrolled credential"
            await self._refuse("device.authn", user, target, reason, remote_addr=remote_addr)
            raise AccessDenied("device authentication failed: " + reason)
        pref = (await self.auth.auth_preference()).spec.device_trust
        problems = os_problems(device, fresh, pref)
        held = device.spec.compliance
        # A device that fell below the minimum OS is marked non-compliant (with its lock, so
        # its live sessions end); one that reports a good OS again is cleared of that mark.
        recovering = not problems and held.status == "non_compliant" and held.source == "posture"
        locked = await self.auth.lock_decision(LockTargets(user=user, device=device.name))
        ours = compliance_lock_name(device.name)
        if recovering and all(lock.name == ours for lock in locked.locks):
            locked = LockDecision(allowed=True)
        if not locked.allowed and not problems:
            await self._refuse("device.authn", user, target, locked.reason, remote_addr=remote_addr)
            locked.raise_if_denied()
        now = self.auth.clock.now()
        compliance: Compliance | None = None
        if problems:
            compliance = Compliance(
                status="non_compliant", reason="; ".join(problems), source="posture", updated=now
            )
        elif recovering:
            compliance = Compliance(
                status="unknown",
                reason="OS version meets the minimum",
                source="posture",
                updated=now,
            )

        async def change(current: Device) -> tuple[Device, list[Op]]:
            updated = current.model_copy(deep=True)
            if isinstance(spend, Delete):
                await self._backend.get(spend.key)  # NotFound: used meanwhile (a replay)
            updated.spec.last_seen, updated.spec.profile = now, fresh
            extra: list[Op] = [spend]  # a replay: the delete or the create fails
            if compliance is not None:
                updated.spec.compliance = compliance
                extra += await compliance_ops(self.auth, updated)
            return updated, extra

        outcome = (
            {"outcome": "failure", "reason": compliance.reason} if problems and compliance else {}
        )
        try:
            await self.auth.audited_modify(
                self.store,
                device.name,
                change,
                "device.authn",
                user,
                target,
                credential_id=credential.id,
                attestation=credential.attestation,
                remote_addr=remote_addr,
                **outcome,
            )
        except (NotFound, CompareFailed, AlreadyExists):
            reason = "challenge already used"
            await self._refuse("device.authn", user, target, reason, remote_addr=remote_addr)
            raise AccessDenied(
                "device authentication failed: the challenge was already used"
            ) from None
        if problems:
            raise AccessDenied(
                "device authentication failed: your device does not meet the device policy: "
                + "; ".join(problems)
            )
        return {
            "device_id": device.name,
            "device_asset_tag": device.spec.asset_tag,
            "device_credential_id": credential.id,
            "device_attestation": credential.attestation,
        }

    async def recheck(self, identity: Identity, remote_addr: str) -> Identity:
        """Certificate renewal: ``identity`` keeps its device only while the device is still
        trusted (enrolled with that credential, software keys still allowed, not
        non-compliant, the minimum OS met, not locked); otherwise the device fields are
        dropped (audited as a ``device.authn`` failure), as a failed ceremony would."""
        if not identity.device_id:
            return identity
        try:
            device: Device | None = await self.store.get(identity.device_id)
        except NotFound:
            device = None
        pref = (await self.auth.auth_preference()).spec.device_trust
        reason = ""
        if device is None:
            reason = "no longer in the inventory"
        else:
            spec, credential = device.spec, device.spec.credential
            problems = os_problems(device, spec.profile, pref)
            if credential is None or spec.enroll_status != "enrolled":
                reason = f"device is {spec.enroll_status}"
            elif credential.id != identity.device_credential_id:
                reason = "the device holds another credential"
            elif credential.attestation == "software" and not pref.allow_software:
                reason = "software device keys are no longer allowed"
            elif spec.compliance.status == "non_compliant":
                reason = f"device is non_compliant ({spec.compliance.reason})"
            elif problems:
                reason = "; ".join(problems)
            else:
                locked = await self.auth.lock_decision(LockTargets(device=device.name))
                reason = "" if locked.allowed else locked.reason
        if not reason:
            return identity
        await self._refuse(
            "device.authn",
            identity.user,
            f"device/{identity.device_id}",
            f"at renewal: {reason}",
            remote_addr=remote_addr,
        )
        return identity.model_copy(
            update={
                "device_id": "",
                "device_asset_tag": "",
                "device_credential_id": "",
                "device_attestation": "",
            }
        )

    # ---- helpers -----------------------------------------------------------------------------

    async def _put_challenge(self, name: str, record: dict[str, Any]) -> None:
        expires = self.auth.clock.now() + CHALLENGE_TTL
        await self._backend.create(
            Item(CHALLENGE_PREFIX + name, json.dumps(record).encode(), expires=expires)
        )

    async def _challenge(self, name: str, kind: str, user: str) -> tuple[dict[str, Any], Item]:
        if not name or len(name) > 64 or not name.isalnum():
            raise BadParameter("challenge: malformed id")
        try:
            item = await self._backend.get(CHALLENGE_PREFIX + name)
        except NotFound:
            raise AccessDenied("unknown, expired or already used device challenge") from None
        record: dict[str, Any] = json.loads(item.value)
        expires = item.expires
        if (
            record.get("kind") != kind
            or record.get("user") != user
            or (expires is not None and expires <= self.auth.clock.now())
        ):
            raise AccessDenied("unknown, expired or already used device challenge")
        return record, item

    async def _ek_issuer(self, ek: EKPublic, bundle: str, fetch: bool = False) -> str:
        """``device_trust.ek_ca_bundle`` is set: the EK certificate must chain to it; returns
        the manufacturer CA's subject. ``fetch`` (``device_trust.fetch_ek_intermediates``): the
        intermediates the bundle lacks come from the URLs in the certificates (kept once the
        chain verified; :mod:`bastion.auth.ek_fetch`).

        Raises:
            AccessDenied: no EK certificate, one that does not chain, or a missing intermediate
                that could not be fetched.
            BadParameter: the bundle cannot be read or parsed (an admin's mistake).
        """
        if not ek.cert_pem:
            raise AccessDenied(
                "this cluster admits only TPMs with a manufacturer's endorsement key certificate "
                "(device_trust.ek_ca_bundle); this TPM sent none"
            )
        if bundle.startswith("/"):
            try:
                bundle = await asyncio.to_thread(Path(bundle).read_text)
            except (OSError, UnicodeDecodeError) as exc:
                raise BadParameter(
                    f"device_trust.ek_ca_bundle: cannot read {bundle}: {exc}"
                ) from None
        roots = load_ek_roots(bundle)
        now = self.auth.clock.now()
        fetched: list[x509.Certificate] = []
        fresh: dict[str, list[x509.Certificate]] = {}
        data_dir = self.auth.deps.data_dir
        cache = issuer_cache(data_dir / "ek-intermediates" if data_dir else None)
        if fetch:
            try:
                leaf = x509.load_pem_x509_certificate(ek.cert_pem.encode())
                fetched, fresh = await complete_chain(leaf, (), roots, now, cache)
            except ValueError:
                pass  # the verifier names what is wrong with the certificate
            except IssuerFetchError as exc:
                raise AccessDenied(str(exc)) from None
        try:
            anchor = verify_ek_chain(ek.cert_pem, roots, now, fetched=fetched)
        except EKChainError as exc:
            raise AccessDenied(f"the TPM's endorsement key certificate is refused: {exc}") from None
        for uri, certs in fresh.items():  # only intermediates that led to a configured root
            await cache.put(uri, certs, now)
        return anchor.subject.rfc4514_string()

    async def _ek_owner(self, key_sha256: str) -> str:
        try:
            item = await self._backend.get(EK_PREFIX + key_sha256)
        except NotFound:
            return ""
        return str(json.loads(item.value).get("device", ""))


class DeviceTrustCheck:
    """The gate's device-trust check over three lookups, so that it runs wherever identities
    arrive: the auth process reads its backend (:class:`AuthDeviceTrust`), a proxy in its own
    process its watch-fed cache (preference, roles) and auth's API (the device record).

    Args:
        preference: the cluster's current device-trust preference.
        role_modes: the ``device_trust_mode`` option of each named role (unknown roles: none).
        device: the inventory record by id (None: not in the inventory).
        clock: the time the maximum-sync-age rule is judged at (default: the system's).

    Every lookup error propagates: the gate fails closed.
    """

    def __init__(
        self,
        preference: Callable[[], Awaitable[DeviceTrustPreference]],
        role_modes: Callable[[Sequence[str]], Awaitable[list[DeviceTrustMode | None]]],
        device: Callable[[str], Awaitable[Device | None]],
        clock: Clock | None = None,
    ) -> None:
        self._preference = preference
        self._role_modes = role_modes
        self._device = device
        self._clock = clock or SystemClock()

    async def refusal(self, identity: Identity) -> DeviceRefusal | None:
        if identity.kind == "host":
            return None
        pref = await self._preference()
        modes: list[DeviceTrustMode | None] = []
        if pref.mode != "required":
            modes = await self._role_modes(identity.roles)
        mode = effective_device_mode(pref.mode, modes)
        if mode != "required":
            return None
        if identity.origin_cluster:  # a trusted root's user: the root attested the device
            return remote_device_refusal(identity, pref)
        device = await self._device(identity.device_id) if identity.device_id else None
        return device_refusal(identity, mode, device, pref, now=self._clock.now())


class AuthDeviceTrust(DeviceTrustCheck):
    """The gate's device-trust check in the auth process: the cluster preference, the roles
    and the device record read from the backend (current, fail closed on errors)."""

    def __init__(self, auth: AuthServer) -> None:
        self._auth = auth
        self._devices = DeviceService(auth)
        super().__init__(self._pref, self._modes, self._get, auth.clock)

    async def _pref(self) -> DeviceTrustPreference:
        return (await self._auth.auth_preference()).spec.device_trust

    async def _modes(self, names: Sequence[str]) -> list[DeviceTrustMode | None]:
        modes: list[DeviceTrustMode | None] = []
        for name in names:
            try:
                modes.append((await self._auth.roles.get(name)).spec.options.device_trust_mode)
            except NotFound:
                continue
        return modes

    async def _get(self, device_id: str) -> Device | None:
        try:
            return await self._devices.store.get(device_id)
        except NotFound:
            return None


def cached_device_trust(
    cache: ResourceCache, fetch: Callable[[str], Awaitable[Device | None]]
) -> DeviceTrustCheck:
    """The device-trust check of a proxy in its own process: the preference and the roles
    from its watch-fed ``cache``, the device record through ``fetch`` (auth's API, asked only
    when the mode is ``required``: always current). Fails closed before the first sync."""

    def synced() -> None:
        if not cache.state.synced and not cache.state.resources:
            raise ConnectionProblem("device trust is not known yet: not synced with auth")

    async def preference() -> DeviceTrustPreference:
        synced()
        for pref in cache.items("cluster_auth_preference"):
            if isinstance(pref, AuthPreference):
                return pref.spec.device_trust
        return DeviceTrustPreference()

    async def role_modes(names: Sequence[str]) -> list[DeviceTrustMode | None]:
        return [role.spec.options.device_trust_mode for role in await cache.get_roles(names)]

    return DeviceTrustCheck(preference, role_modes, fetch)
