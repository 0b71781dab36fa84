"""TOTP as an MFA device: enrolment (secret shown once, confirmed by a first code), the
device record, and code checks that refuse a reused time step.

Layer: services. The secret lives in the credential store (never in the device record or in
audit); the pending enrolment is a short-lived challenge record.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pyotp

from bastion.audit.log import AuditLog
from bastion.clock import Clock
from bastion.errors import AccessDenied, BadParameter, NotFound
from bastion.mfa.store import Challenge, ChallengeStore, DeviceStore
from bastion.services.credentials import CredentialStore, verify_totp
from bastion.types.mfa import MFADevice, validate_device_name

__all__ = ["ENROLMENT_TTL", "TOTPEnrolment", "TOTPFactor"]

ENROLMENT_TTL = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class TOTPEnrolment:
    enrolment: str
    """Id of the pending enrolment (pass it back to :meth:`TOTPFactor.finish`)."""
    secret: str
    uri: str


class TOTPFactor:
    def __init__(
        self,
        devices: DeviceStore,
        challenges: ChallengeStore,
        credentials: CredentialStore,
        clock: Clock,
        audit: AuditLog,
        cluster: str,
    ) -> None:
        self._devices = devices
        self._challenges = challenges
        self._credentials = credentials
        self._clock = clock
        self._audit = audit
        self._cluster = cluster

    async def begin(self, user: str) -> TOTPEnrolment:
        secret = pyotp.random_base32()
        enrolment = secrets.token_urlsafe(24)
        await self._challenges.put(
            Challenge(
                challenge=enrolment,
                user=user,
                scope="register",
                kind="totp",
                expires=self._clock.now() + ENROLMENT_TTL,
                data={"secret": secret},
            )
        )
        uri = pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=f"Bastion {self._cluster}")
        return TOTPEnrolment(enrolment=enrolment, secret=secret, uri=uri)

    async def finish(
        self, user: str, name: str, enrolment: str, code: str, remote_addr: str = ""
    ) -> MFADevice:
        """Check the first code for the pending secret and record the device.

        Raises:
            BadParameter: invalid name. AccessDenied: unknown enrolment or wrong code.
        """
        try:
            validate_device_name(name)
        except ValueError as exc:
            raise BadParameter(str(exc)) from None
        try:
            pending = await self._challenges.take(enrolment)
        except NotFound:
            raise AccessDenied("the TOTP enrolment is unknown or expired; start again") from None
        if pending.kind != "totp" or pending.user != user:
            raise AccessDenied("the TOTP enrolment belongs to another user")
        secret = str(pending.data["secret"])
        step = verify_totp(secret, code, self._clock.now(), 0)
        if step is None:
            await self._audit.emit(
                "mfa.add",
                outcome="failure",
                user=user,
                target=f"user/{user}",
                remote_addr=remote_addr,
                reason="wrong TOTP code during enrolment",
                device_name=name,
                device_type="totp",
            )
            raise AccessDenied("the TOTP code is wrong: check your app's clock and start again")
        return await self.record(user, name, secret, step, remote_addr)

    async def record(
        self, user: str, name: str, secret: str, step: int, remote_addr: str = ""
    ) -> MFADevice:
        """Store a verified TOTP secret and its device record (audited ``mfa.add``)."""
        creds = await self._credentials.get(user)
        creds.totp_secret = secret
        creds.totp_last_step = step
        await self._credentials.put(user, creds)
        for old in await self._devices.list(user):
            if old.type == "totp":
                await self._devices.remove(old)
        device = MFADevice(
            id=str(uuid.uuid4()), user=user, name=name, type="totp", added=self._clock.now()
        )
        await self._devices.add(device)
        await self._audit.emit(
            "mfa.add",
            user=user,
            target=f"user/{user}",
            remote_addr=remote_addr,
            mfa_device=device.id,
            device_name=name,
            device_type="totp",
        )
        return device

    async def check(self, user: str, code: str) -> bool:
        """A current code of the user's TOTP secret, never a step used before (then recorded)."""
        creds = await self._credentials.get(user)
        if not creds.totp_secret:
            return False
        step = verify_totp(creds.totp_secret, code, self._clock.now(), creds.totp_last_step)
        if step is None:
            return False
        creds.totp_last_step = step
        await self._credentials.put(user, creds)
        return True
