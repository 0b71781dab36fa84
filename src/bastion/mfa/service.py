"""MFAService: WebAuthn registration and assertion ceremonies (relying party), TOTP enrolment and
device management, for the auth server.

Layer: services. The cryptographic checks are the ``webauthn`` library's
(``verify_registration_response`` / ``verify_authentication_response``); this module adds what a
relying party must do around them:

* challenges are stored server-side, single use, expire after :data:`CHALLENGE_TTL`, and are bound
  to a user (or none, for passwordless) and a *scope*. Scopes in use: ``login``,
  ``session:<node>:<login>`` (per-session MFA), ``admin:<METHOD> <path> <sha256-hex of body>``
  (admin actions), ``register`` (internal);
* a credential is looked up by its id and must belong to the expected user (passwordless: the
  user handle must name the credential's owner);
* the signature counter must grow: a regression marks the device **cloned**, audits
  ``mfa.cloned`` and refuses the device from then on (only after the signature verified, so a
  forged response cannot get a good device disabled);
* user verification follows the cluster policy, and is always required for passwordless;
* only a device registered for passwordless login (``passwordless=True`` at registration, see
  :attr:`MFADevice.passwordless_allowed`) answers a passwordless challenge: a key registered as a
  second factor is refused with :class:`SecondFactorOnly` (after its signature verified), so it
  never logs in without the password;
* attestation policy (:func:`bastion.mfa.policy.attestation_refusal`) and the software
  authenticator flag at registration.

Every refusal raises :class:`AccessDenied` whose message says what was wrong (callers audit it
with the user and scope: login, session and admin MFA each have their own event).
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from webauthn import (
    generate_authentication_options,
    options_to_json,
    verify_authentication_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidJSONStructure,
)
from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

import bastion.mfa.policy as policy
import bastion.mfa.registration as registration
from bastion.audit.log import AuditLog
from bastion.backend.base import Backend
from bastion.clock import Clock
from bastion.errors import AccessDenied, AlreadyExists, BadParameter, LimitExceeded, NotFound
from bastion.mfa.responses import challenge_of, explain
from bastion.mfa.store import MAX_DEVICES, Challenge, ChallengeStore, DeviceStore
from bastion.mfa.totp import TOTPEnrolment, TOTPFactor
from bastion.services.credentials import CredentialStore
from bastion.types.access import AuthPreference
from bastion.types.mfa import MFADevice, validate_device_name

__all__ = [
    "CHALLENGE_TTL",
    "MFADeps",
    "MFAService",
    "MFAVerified",
    "SecondFactorOnly",
    "TOTPEnrolment",
    "usable_webauthn",
]

CHALLENGE_TTL = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class MFAVerified:
    """A verified WebAuthn assertion."""

    user: str
    device_id: str
    device_name: str
    aaguid: str
    user_verified: bool = False


class SecondFactorOnly(AccessDenied):
    """A passwordless assertion from a device registered as a second factor.

    Raised only after the assertion verified, so :attr:`user` and :attr:`device_id` are the
    real owner and device (the login audits them).
    """

    def __init__(self, device: MFADevice) -> None:
        super().__init__(
            f"MFA device {device.name!r} was registered as a second factor, not for passwordless "
            "login: log in with your password and this key, or register a passkey with bsh mfa "
            "add --passwordless"
        )
        self.user = device.user
        self.device_id = device.id


@dataclass(frozen=True, slots=True)
class MFADeps:
    backend: Backend
    clock: Clock
    audit: AuditLog
    cluster: str
    preference: Callable[[], Awaitable[AuthPreference]]
    default_rp_id: str = "localhost"
    default_origins: tuple[str, ...] = ()


def _json_options(options: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(options_to_json(options))
    return data


class MFAService:
    """See the module docstring. One instance per auth server (``AuthServer.mfa``)."""

    def __init__(self, deps: MFADeps) -> None:
        self.deps = deps
        self.devices = DeviceStore(deps.backend)
        self.challenges = ChallengeStore(deps.backend)
        self.credentials = CredentialStore(deps.backend)
        self._clock = deps.clock
        self.totp = TOTPFactor(
            self.devices, self.challenges, self.credentials, deps.clock, deps.audit, deps.cluster
        )

    async def _pref(self) -> AuthPreference:
        return await self.deps.preference()

    async def relying_party(self) -> policy.RelyingParty:
        pref = await self._pref()
        return policy.relying_party(
            pref.spec.webauthn, self.deps.default_rp_id, self.deps.default_origins
        )

    async def _require_webauthn(self) -> AuthPreference:
        pref = await self._pref()
        if not policy.webauthn_enabled(pref.spec.second_factor):
            raise BadParameter(
                f"WebAuthn is not enabled on this cluster (second_factor: "
                f"{pref.spec.second_factor}); an admin can set second_factor: on"
            )
        return pref

    # ---- devices -------------------------------------------------------------------------------

    async def list_devices(self, user: str) -> list[MFADevice]:
        """WebAuthn and TOTP devices of ``user`` (a TOTP secret set before devices were recorded
        shows as ``otp``)."""
        devices = await self.devices.list(user)
        if not any(d.type == "totp" for d in devices):
            creds = await self.credentials.get(user)
            if creds.totp_secret:
                devices.append(
                    MFADevice(
                        id="totp",
                        user=user,
                        name="otp",
                        type="totp",
                        added=self._clock.now().replace(year=1970, month=1, day=1),
                    )
                )
        return devices

    async def totp_device(self, user: str) -> MFADevice | None:
        return next((d for d in await self.list_devices(user) if d.type == "totp"), None)

    async def remove_device(self, user: str, name: str, actor: str, remote_addr: str = "") -> None:
        """Remove one device by name (or id).

        Raises:
            NotFound: no such device. AccessDenied: it is the last one of a required kind.
        """
        devices = await self.list_devices(user)
        device = next((d for d in devices if name in (d.name, d.id)), None)
        if device is None:
            raise NotFound(f"no MFA device named {name!r}; bsh mfa ls lists yours")
        refusal = policy.removal_refusal(devices, device, (await self._pref()).spec)
        if refusal:
            await self.deps.audit.emit(
                "mfa.remove",
                outcome="failure",
                user=actor,
                target=f"user/{user}",
                remote_addr=remote_addr,
                reason=refusal,
                mfa_device=device.id,
                device_name=device.name,
            )
            raise AccessDenied(refusal)
        if device.type == "totp":
            creds = await self.credentials.get(user)
            creds.totp_secret = ""
            creds.totp_last_step = 0
            await self.credentials.put(user, creds)
        if device.id != "totp":
            await self.devices.remove(device)
        await self.deps.audit.emit(
            "mfa.remove",
            user=actor,
            target=f"user/{user}",
            remote_addr=remote_addr,
            mfa_device=device.id,
            device_name=device.name,
            device_type=device.type,
        )

    async def forget_user(self, user: str) -> None:
        await self.devices.forget_user(user)

    # ---- WebAuthn registration -----------------------------------------------------------------

    async def begin_registration(self, user: str, *, passwordless: bool = False) -> dict[str, Any]:
        """Options for ``navigator.credentials.create()`` (options_to_json form).

        Args:
            passwordless: register a passkey: a discoverable credential with user verification,
                recorded as allowed to log in alone. Otherwise a second factor (a discoverable
                credential is discouraged, and the device never logs in alone).
        """
        pref = await self._require_webauthn()
        rp = await self.relying_party()
        existing = await self.devices.list(user)
        if len(existing) >= MAX_DEVICES:  # say so before the user touches a key
            raise LimitExceeded(f"you have {len(existing)} MFA devices; remove one first")
        challenge = secrets.token_bytes(32)
        options = registration.creation_options(
            rp=rp,
            cluster=self.deps.cluster,
            user=user,
            user_handle=await self.devices.user_handle(user),
            challenge=challenge,
            passwordless=passwordless,
            attestation=pref.spec.webauthn.attestation,
            existing=existing,
        )
        await self.challenges.put(
            Challenge(
                challenge=bytes_to_base64url(challenge),
                user=user,
                scope="register",
                kind="register",
                expires=self._clock.now() + CHALLENGE_TTL,
                user_verification="required" if passwordless else rp.user_verification,
                data={"passwordless": passwordless},
            )
        )
        return options

    async def finish_registration(
        self, user: str, device_name: str, response: dict[str, Any], remote_addr: str = ""
    ) -> MFADevice:
        """Verify the authenticator's attestation and store the new device (audited ``mfa.add``).

        Raises:
            BadParameter: invalid device name. AlreadyExists: name or credential taken.
            AccessDenied: the response, its attestation or the authenticator is refused.
        """
        try:
            validate_device_name(device_name)
        except ValueError as exc:
            raise BadParameter(str(exc)) from None
        try:
            device = await self._register(user, device_name, response)
        except (AccessDenied, AlreadyExists, LimitExceeded) as exc:
            await self.deps.audit.emit(
                "mfa.add",
                outcome="failure",
                user=user,
                target=f"user/{user}",
                remote_addr=remote_addr,
                reason=exc.message,
                device_name=device_name,
                device_type="webauthn",
            )
            raise
        await self.deps.audit.emit(
            "mfa.add",
            user=user,
            target=f"user/{user}",
            remote_addr=remote_addr,
            mfa_device=device.id,
            device_name=device.name,
            device_type="webauthn",
            aaguid=device.aaguid,
            software=device.software,
            passkey=device.passwordless_allowed,
            discoverable=device.resident,
            attestation_format=device.attestation_format,
        )
        return device

    async def _register(self, user: str, name: str, response: dict[str, Any]) -> MFADevice:
        pref = await self._require_webauthn()
        challenge_text, _ = challenge_of(response)
        pending = await self._take(challenge_text, "register", user, "register")
        device = registration.verified_device(
            response=response,
            ceremony=registration.Ceremony(
                challenge_text,
                pending.user_verification,
                # a challenge stored before this was recorded registers a second factor
                passwordless=pending.data.get("passwordless") is True,
            ),
            rp=await self.relying_party(),
            spec=pref.spec,
            user=user,
            name=name,
            device_id=str(uuid.uuid4()),
            now=self._clock.now(),
        )
        try:
            await self.devices.by_credential(device.credential_id)
            raise AlreadyExists("this credential is already registered")
        except NotFound:
            pass
        return await self.devices.add(device)

    # ---- WebAuthn assertions -------------------------------------------------------------------

    async def begin_challenge(self, user: str | None, scope: str) -> dict[str, Any]:
        """Options for ``navigator.credentials.get()`` bound to ``user`` and ``scope``.

        Args:
            user: whose devices may answer; None for passwordless (any discoverable credential,
                user verification required).
            scope: what the assertion will authorize (see the module docstring).

        Raises:
            BadParameter: WebAuthn disabled, or empty scope. NotFound: the user has no usable
            WebAuthn device. AccessDenied: passwordless is disabled.
        """
        pref = await self._require_webauthn()
        if not scope or len(scope) > 1024:
            raise BadParameter("an MFA challenge needs a scope of 1 to 1024 characters")
        rp = await self.relying_party()
        allow: list[PublicKeyCredentialDescriptor] = []
        uv = rp.user_verification
        if user is None:
            if not pref.spec.allow_passwordless:
                raise AccessDenied("passwordless login is disabled on this cluster")
            uv = "required"
        else:
            usable = [d for d in await self.devices.list(user) if d.type == "webauthn"]
            usable = [d for d in usable if not d.cloned]
            if not usable:
                raise NotFound(
                    f"{user} has no WebAuthn device: register a security key with bsh mfa add"
                )
            allow = [
                PublicKeyCredentialDescriptor(id=base64url_to_bytes(d.credential_id))
                for d in usable
            ]
        challenge = secrets.token_bytes(32)
        options = generate_authentication_options(
            rp_id=rp.rp_id,
            challenge=challenge,
            timeout=registration.TIMEOUT_MS,
            allow_credentials=allow,
            user_verification=UserVerificationRequirement(uv),
        )
        await self.challenges.put(
            Challenge(
                challenge=bytes_to_base64url(challenge),
                user=user or "",
                scope=scope,
                kind="assert",
                expires=self._clock.now() + CHALLENGE_TTL,
                user_verification=uv,
            )
        )
        return _json_options(options)

    async def _take(self, challenge: str, kind: str, user: str, scope: str) -> Challenge:
        try:
            pending = await self.challenges.take(challenge)
        except NotFound:
            raise AccessDenied(
                "the WebAuthn challenge is unknown, expired or already used (a replayed "
                "response?); start again"
            ) from None
        if pending.expires <= self._clock.now():
            raise AccessDenied("the WebAuthn challenge expired; start again")
        if pending.kind != kind:
            raise AccessDenied(f"the challenge was issued for {pending.kind}, not {kind}")
        if pending.scope != scope:
            raise AccessDenied(
                f"scope mismatch: the challenge was issued for {pending.scope!r}, not {scope!r}"
            )
        if pending.user != user:
            raise AccessDenied("the challenge was issued for another user")
        return pending

    async def verify_challenge(
        self, user: str | None, scope: str, response: dict[str, Any]
    ) -> MFAVerified:
        """Verify an assertion for ``scope`` (single use) and return who and which device.

        Raises:
            AccessDenied: with the reason (unknown/used/expired challenge, scope or user
            mismatch, unknown credential, cloned or disallowed device, wrong origin or RP id,
            missing user verification, bad signature, counter regression).
            SecondFactorOnly: (an AccessDenied) a passwordless assertion (``user`` None) from a
            device registered as a second factor.
        """
        pref = await self._pref()
        rp = await self.relying_party()
        challenge_text, _ = challenge_of(response)
        pending = await self._take(challenge_text, "assert", user or "", scope)
        device = await self._device_for(user, response)
        if device.cloned:
            raise AccessDenied(
                f"MFA device {device.name!r} is marked as cloned (its signature counter went "
                "backwards) and is refused; remove it and register the key again"
            )
        if device.software and not pref.spec.allow_software_authenticator:
            raise AccessDenied(
                f"MFA device {device.name!r} is a software authenticator, which this cluster "
                "no longer allows"
            )
        try:
            verified = verify_authentication_response(
                credential=response,
                expected_challenge=base64url_to_bytes(challenge_text),
                expected_rp_id=rp.rp_id,
                expected_origin=list(rp.origins),
                credential_public_key=base64url_to_bytes(device.public_key),
                credential_current_sign_count=0,  # compared below, to mark clones
                require_user_verification=pending.user_verification == "required",
            )
        except (InvalidAuthenticationResponse, InvalidJSONStructure) as exc:
            raise AccessDenied(f"WebAuthn assertion refused: {explain(exc)}") from None
        if user is None and not device.passwordless_allowed:
            raise SecondFactorOnly(device)
        new_count = verified.new_sign_count
        # resident: it answered a passwordless request
        updated = await self.devices.advance_counter(
            device, new_count, self._clock.now(), resident=user is None
        )
        if updated is None:
            await self._mark_cloned(device, new_count)
            raise AccessDenied(
                f"signature counter regression on MFA device {device.name!r} (got {new_count}, "
                "not above the last one seen): the authenticator may be cloned; the "
                "device is refused from now on"
            )
        return MFAVerified(
            user=device.user,
            device_id=device.id,
            device_name=device.name,
            aaguid=device.aaguid,
            user_verified=verified.user_verified,
        )

    async def _device_for(self, user: str | None, response: dict[str, Any]) -> MFADevice:
        credential_id = str(response.get("rawId") or response.get("id") or "")
        try:
            device = await self.devices.by_credential(credential_id)
        except NotFound:
            raise AccessDenied("unknown credential: this key is not registered") from None
        if user is not None and device.user != user:
            raise AccessDenied("unknown credential: this key is not registered for this user")
        if user is None:
            # An empty allowCredentials list can only be answered by a discoverable credential,
            # which returns the user handle it was created with.
            handle = (response.get("response") or {}).get("userHandle")
            if not isinstance(handle, str) or not handle:
                raise AccessDenied(
                    "passwordless login needs a passkey (a discoverable credential) with a user "
                    "handle; register one with bsh mfa add --passwordless"
                )
            try:
                owner = await self.devices.user_of_handle(handle)
            except NotFound:
                owner = ""
            if owner != device.user:
                raise AccessDenied("the user handle does not match the credential's owner")
        return device

    async def _mark_cloned(self, device: MFADevice, new_count: int) -> None:
        try:
            device = await self.devices.get(device.user, device.id)  # keep the newest counter
        except NotFound:
            return  # removed meanwhile: nothing left to refuse
        device.cloned = True
        await self.devices.put(device)
        await self.deps.audit.emit(
            "mfa.cloned",
            outcome="failure",
            user=device.user,
            target=f"user/{device.user}",
            mfa_device=device.id,
            device_name=device.name,
            aaguid=device.aaguid,
            reason=f"signature counter went from {device.sign_count} to {new_count}",
        )

    # ---- TOTP (mfa/totp.py) ----------------------------------------------------------------------

    async def begin_totp(self, user: str) -> TOTPEnrolment:
        """A new TOTP secret to show the user; it takes effect in :meth:`finish_totp`."""
        if await self.totp_device(user) is not None:
            raise AlreadyExists("you already have a TOTP device; remove it first (bsh mfa rm)")
        return await self.totp.begin(user)

    async def finish_totp(
        self, user: str, name: str, enrolment: str, code: str, remote_addr: str = ""
    ) -> MFADevice:
        return await self.totp.finish(user, name, enrolment, code, remote_addr)

    async def record_totp(
        self, user: str, name: str, secret: str, step: int, remote_addr: str = ""
    ) -> MFADevice:
        return await self.totp.record(user, name, secret, step, remote_addr)

    async def confirm_change(
        self,
        user: str,
        scope: str,
        webauthn: dict[str, Any] | None,
        otp: str,
        remote_addr: str,
    ) -> MFADevice | None:
        """:meth:`confirm_with_existing` for a device change by the user (``bsh mfa add/rm``,
        the account page): a refused proof is audited as the change's failure
        (``mfa.add`` / ``mfa.remove``)."""
        try:
            return await self.confirm_with_existing(user, scope, webauthn, otp)
        except Exception as exc:  # any refusal (or failure) of the proof is the change's failure
            await self.deps.audit.emit(
                "mfa.add" if scope == "mfa:add" else "mfa.remove",
                outcome="failure",
                user=user,
                target=f"user/{user}",
                remote_addr=remote_addr,
                reason=f"no valid confirmation with an existing device: {exc}",
            )
            raise

    async def confirm_with_existing(
        self, user: str, scope: str, webauthn: dict[str, Any] | None, otp: str
    ) -> MFADevice | None:
        """Proof that the caller holds one of the user's devices, before a device change.

        A stolen certificate alone must not be able to add a key of the thief's (or remove the
        owner's). Users without any device pass (their first one).

        Args:
            scope: ``mfa:add`` or ``mfa:remove:<name>`` (a WebAuthn proof is bound to it).

        Returns:
            The device that confirmed, or None when the user had none.

        Raises:
            AccessDenied: devices exist and no valid proof was given.
        """
        devices = await self.list_devices(user)
        if not devices:
            return None
        if webauthn:
            verified = await self.verify_challenge(user, scope, webauthn)
            return next(d for d in await self.devices.list(user) if d.id == verified.device_id)
        totp = next((d for d in devices if d.type == "totp"), None)
        if otp and totp is not None:
            if not await self.totp.check(user, otp):
                raise AccessDenied("the TOTP code is wrong or was already used")
            return totp
        raise AccessDenied(
            "you already have MFA devices: confirm this change with one of them (touch your "
            "security key, or enter a TOTP code)"
        )

    async def touch(self, device: MFADevice) -> None:
        """Record a successful use (TOTP logins)."""
        if device.id == "totp":
            return
        device.last_used = self._clock.now()
        await self.devices.put(device)


def usable_webauthn(devices: Sequence[MFADevice]) -> list[MFADevice]:
    """WebAuthn devices that may answer a challenge (not marked cloned)."""
    return [d for d in devices if d.type == "webauthn" and not d.cloned]
