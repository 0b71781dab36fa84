"""Backend storage of MFA devices, WebAuthn user handles and pending challenges.

Layer: services (backend keys only; no WebAuthn logic). Keys::

    mfa_devices/<user>/<device id>          MFADevice JSON
    mfa_credentials/<sha256(credential id)> {"user", "device"}: find a device from an assertion
    mfa_handles/<user>                      the user's random WebAuthn user handle (base64url)
    mfa_handle_users/<sha256(handle)>       the user of a handle (passwordless login)
    mfa_challenges/<sha256(challenge)>      pending ceremony: user, scope, kind; expires

Challenges are single use: :meth:`ChallengeStore.take` deletes the record with the revision it read,
so of two concurrent uses exactly one wins.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from webauthn.helpers import bytes_to_base64url

from bastion.backend.base import Backend, Item
from bastion.errors import AlreadyExists, CompareFailed, LimitExceeded, NotFound
from bastion.types.mfa import MFADevice

__all__ = ["MAX_DEVICES", "Challenge", "ChallengeStore", "DeviceStore"]

MAX_DEVICES = 20
"""Per user: enough for keys, backups and passkeys; bounds what one account can store."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class DeviceStore:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def list(self, user: str) -> list[MFADevice]:
        items = await self._backend.get_range(f"mfa_devices/{user}/")
        devices = [MFADevice.model_validate_json(i.value) for i in items]
        # the prefix also covers user names that extend this one with "/" (SSO names may)
        devices = [d for d in devices if d.user == user]
        return sorted(devices, key=lambda d: (d.added, d.name))

    async def get(self, user: str, device_id: str) -> MFADevice:
        try:
            item = await self._backend.get(f"mfa_devices/{user}/{device_id}")
        except NotFound:
            raise NotFound(f"no MFA device {device_id!r} for user {user!r}") from None
        return MFADevice.model_validate_json(item.value)

    async def by_name(self, user: str, name: str) -> MFADevice:
        for device in await self.list(user):
            if device.name == name:
                return device
        raise NotFound(f"no MFA device named {name!r}; bsh mfa ls lists yours")

    async def add(self, device: MFADevice) -> MFADevice:
        """Raises: AlreadyExists (a device of that name), LimitExceeded (:data:`MAX_DEVICES`)."""
        existing = await self.list(device.user)
        if len(existing) >= MAX_DEVICES:
            raise LimitExceeded(
                f"you have {len(existing)} MFA devices, the most allowed; remove one first"
            )
        if any(d.name == device.name for d in existing):
            raise AlreadyExists(
                f"you already have an MFA device named {device.name!r}; pick another --name"
            )
        if device.credential_id:
            await self._backend.put(
                Item(
                    key=f"mfa_credentials/{_digest(device.credential_id)}",
                    value=json.dumps({"user": device.user, "device": device.id}).encode(),
                )
            )
        await self.put(device)
        return device

    async def put(self, device: MFADevice) -> None:
        await self._backend.put(
            Item(
                key=f"mfa_devices/{device.user}/{device.id}",
                value=device.model_dump_json().encode(),
            )
        )

    async def advance_counter(
        self, device: MFADevice, new_count: int, used_at: datetime, resident: bool
    ) -> MFADevice | None:
        """Raise the stored signature counter to ``new_count`` atomically (compare-and-swap).

        Returns None when the stored counter is already ``>= new_count`` (non-zero): a
        regression, even when a concurrent assertion got there first, so two racing assertions
        from a cloned key cannot both pass.
        """
        key = f"mfa_devices/{device.user}/{device.id}"
        while True:
            try:
                item = await self._backend.get(key)
            except NotFound:
                raise NotFound(f"MFA device {device.name!r} was removed") from None
            current = MFADevice.model_validate_json(item.value)
            if (new_count > 0 or current.sign_count > 0) and new_count <= current.sign_count:
                return None
            current.sign_count = new_count
            current.last_used = used_at
            current.resident = current.resident or resident
            try:
                await self._backend.compare_and_swap(
                    item, Item(key=key, value=current.model_dump_json().encode())
                )
            except CompareFailed:
                continue  # another use of this device changed it: decide again on fresh data
            return current

    async def remove(self, device: MFADevice) -> None:
        if device.credential_id:
            try:
                await self._backend.delete(f"mfa_credentials/{_digest(device.credential_id)}")
            except NotFound:
                pass
        await self._backend.delete(f"mfa_devices/{device.user}/{device.id}")

    async def by_credential(self, credential_id: str) -> MFADevice:
        """Raises: NotFound for a credential no user registered (or one that was removed)."""
        try:
            item = await self._backend.get(f"mfa_credentials/{_digest(credential_id)}")
        except NotFound:
            raise NotFound("unknown credential") from None
        ref = json.loads(item.value)
        return await self.get(str(ref["user"]), str(ref["device"]))

    async def user_handle(self, user: str) -> str:
        """The user's WebAuthn user handle (random, created on first use; no personal data)."""
        try:
            return (await self._backend.get(f"mfa_handles/{user}")).value.decode()
        except NotFound:
            pass
        handle = bytes_to_base64url(secrets.token_bytes(32))
        try:
            await self._backend.create(Item(key=f"mfa_handles/{user}", value=handle.encode()))
        except AlreadyExists:  # a concurrent registration created it first
            return (await self._backend.get(f"mfa_handles/{user}")).value.decode()
        await self._backend.put(
            Item(key=f"mfa_handle_users/{_digest(handle)}", value=user.encode())
        )
        return handle

    async def user_of_handle(self, handle: str) -> str:
        try:
            return (await self._backend.get(f"mfa_handle_users/{_digest(handle)}")).value.decode()
        except NotFound:
            raise NotFound("unknown user handle") from None

    async def forget_user(self, user: str) -> None:
        """Remove every device and the user handle (user deleted or reset)."""
        for device in await self.list(user):
            await self.remove(device)
        try:
            handle = (await self._backend.get(f"mfa_handles/{user}")).value.decode()
            await self._backend.delete(f"mfa_handle_users/{_digest(handle)}")
            await self._backend.delete(f"mfa_handles/{user}")
        except NotFound:
            pass


@dataclass(frozen=True, slots=True)
class Challenge:
    challenge: str
    """base64url, as in the options and in clientDataJSON."""
    user: str
    """Empty for a passwordless challenge (the user is learnt from the credential)."""
    scope: str
    kind: str
    """``register``, ``assert`` or ``totp`` (a pending TOTP enrolment)."""
    expires: datetime
    user_verification: str = "preferred"
    data: dict[str, Any] = field(default_factory=dict)


class ChallengeStore:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def put(self, challenge: Challenge) -> None:
        record = {
            "user": challenge.user,
            "scope": challenge.scope,
            "kind": challenge.kind,
            "user_verification": challenge.user_verification,
            "data": challenge.data,
        }
        await self._backend.create(
            Item(
                key=f"mfa_challenges/{_digest(challenge.challenge)}",
                value=json.dumps(record).encode(),
                expires=challenge.expires,
            )
        )

    async def forget_user(self, user: str) -> int:
        """Drop the user's pending challenges (a reset or deletion: a ceremony started before
        it must not finish after it). Returns how many were dropped."""
        dropped = 0
        for item in await self._backend.get_range("mfa_challenges/"):
            if user and json.loads(item.value).get("user") == user:
                try:
                    await self._backend.delete(item.key, expected_revision=item.revision)
                    dropped += 1
                except (NotFound, CompareFailed):
                    pass  # taken or expired meanwhile
        return dropped

    async def take(self, challenge: str) -> Challenge:
        """Fetch and delete (single use).

        Raises:
            NotFound: unknown, expired or already used.
        """
        key = f"mfa_challenges/{_digest(challenge)}"
        try:
            item = await self._backend.get(key)
            await self._backend.delete(key, expected_revision=item.revision)
        except (NotFound, CompareFailed):
            raise NotFound("unknown, expired or already used challenge") from None
        record = json.loads(item.value)
        assert item.expires is not None
        return Challenge(
            challenge=challenge,
            user=str(record["user"]),
            scope=str(record["scope"]),
            kind=str(record["kind"]),
            expires=item.expires,
            user_verification=str(record.get("user_verification", "preferred")),
            data=dict(record.get("data") or {}),
        )
