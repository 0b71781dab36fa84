"""Local users: invites, password (+ TOTP) login, lockout after repeated failures.

Every attempt is audited (user.login with outcome, method and reason). Messages to the client
never say whether a user exists; the audit log says exactly what happened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyotp
from pydantic import ValidationError

from bastion.auth.devices import LoginProof
from bastion.auth.issuer import UserCerts, parse_public_key
from bastion.auth.key_proof import NO_BINDING, KeyBinding, check_binding, issue_bound
from bastion.auth.revocation import new_epoch
from bastion.auth.server import (
    INVITE_FATE_PREFIX,
    INVITE_MEMORY,
    INVITE_PREFIX,
    SYSTEM_ACTOR,
    AuthServer,
)
from bastion.backend.base import Create, Delete, Item, Op, Put
from bastion.errors import (
    AccessDenied,
    AuthenticationFailed,
    BadParameter,
    BastionError,
    CompareFailed,
    NotFound,
)
from bastion.locks.matcher import LockTargets, identity_targets
from bastion.mfa import policy as mfa_policy
from bastion.mfa.service import MFAVerified, usable_webauthn
from bastion.rbac.checker import RoleSet
from bastion.rbac.device_trust import HARDWARE_KEY_MESSAGE
from bastion.services.credentials import (
    CredentialStore,
    burn_time_for_unknown_user,
    check_password_strength,
    hash_secret,
    new_secret,
    verify_totp,
)
from bastion.types.access import AuthPreference, User, UserSpec
from bastion.types.codec import validation_problems
from bastion.types.meta import Metadata
from bastion.types.mfa import MFADevice

__all__ = ["Invite", "InviteInfo", "LoginChallenge", "UserService"]

ATTEMPT_PREFIX = "login_attempts/"
LOCKOUT_PREFIX = "login_lockouts/"
"""``login_lockouts/<name>`` -> why, expiring when the lockout ends. Keyed by the *name* tried,
whether or not such a user exists, so that responses never tell real accounts from unknown ones
(the audit log records the truth)."""
BAD_CREDENTIALS = "invalid username, password or second factor"


@dataclass(frozen=True, slots=True)
class Invite:
    user: str
    token: str
    url: str
    expires: datetime


@dataclass(frozen=True, slots=True)
class InviteInfo:
    user: str
    otp_required: bool
    otp_secret: str
    otp_uri: str
    second_factor: str = ""
    """The cluster's mode: ``on`` lets the user pick TOTP or a WebAuthn key at the invite."""
    webauthn_allowed: bool = False


@dataclass(frozen=True, slots=True)
class LoginChallenge:
    """What the second step of a password login needs (after the password was checked)."""

    totp: bool
    webauthn: dict[str, object] | None
    """WebAuthn request options (scope ``login``) when the user has a usable key."""


class UserService:
    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth
        self._backend = auth.deps.backend
        self._clock = auth.clock

    # ---- invites -------------------------------------------------------------------------------

    async def add_user(
        self,
        name: str,
        roles: list[str],
        logins: list[str],
        traits: dict[str, list[str]],
        actor: str,
    ) -> Invite:
        try:
            spec = UserSpec(
                roles=roles, traits={**traits, **({"logins": logins} if logins else {})}
            )
            user = User(metadata=Metadata(name=name), spec=spec)
        except ValidationError as exc:
            raise BadParameter(f'user "{name}": {validation_problems(exc)}') from None
        await self.auth.create_resource(user, actor, force=False)
        return await self._new_invite(name, actor)

    async def reset_user(self, name: str, actor: str) -> Invite:
        """Forget password and TOTP; the user sets new ones with a fresh invite.

        MFA devices are forgotten first (intent + completion events: they belong to
        bastion.mfa); then the credentials delete, the unlock and ``user.reset`` are one
        transaction, and the invite with ``user.invite`` another."""
        await self.auth.users.get(name)
        target = f"user/{name}"
        await self.auth.external_step(
            "mfa.forget", lambda: self.auth.mfa.forget_user(name), actor, target
        )

        async def reset(user: User) -> tuple[User, list[Op]]:
            creds = await self.auth.credentials.delete_op(name)
            # Everything issued before the reset is revoked: a new epoch, the old one locked,
            # outstanding invites dropped (bastion.auth.revocation).
            revoke = await self.auth.revocation_ops(name, "reset", actor, user)
            reset_user = _unlocked(user)
            reset_user.spec.epoch = new_epoch()
            ops = [*([creds] if creds else []), *await self._attempt_ops(name), *revoke]
            return reset_user, ops

        await self.auth.audited_modify(self.auth.users, name, reset, "user.reset", actor, target)
        await self.auth.mfa.challenges.forget_user(name)
        return await self._new_invite(name, actor)

    async def sign_up_states(self, names: list[str]) -> dict[str, tuple[str, datetime | None]]:
        """``name -> (state, invite expiry)`` for the users among ``names`` who have not signed
        up: ``pending`` (a live invite) or ``expired`` (no credentials and no live invite)."""
        signed_up = {
            item.key.removeprefix(CredentialStore.PREFIX)
            for item in await self._backend.get_range(CredentialStore.PREFIX)
        }
        invites: dict[str, datetime | None] = {}
        for item in await self._backend.get_range(INVITE_PREFIX):
            try:
                user = str(json.loads(item.value).get("user", ""))
            except ValueError:
                continue
            if item.expires is None or (invites.get(user) or item.expires) <= item.expires:
                invites[user] = item.expires
        states: dict[str, tuple[str, datetime | None]] = {}
        for name in names:
            if name in signed_up:
                continue
            states[name] = ("pending", invites[name]) if name in invites else ("expired", None)
        return states

    async def _attempt_ops(self, name: str) -> list[Op]:
        """Deletes of the name's failed-login counters and lockout (for the transaction that
        resets them)."""
        items = await self._backend.get_range(f"{ATTEMPT_PREFIX}{name}/")
        try:
            items.append(await self._backend.get(LOCKOUT_PREFIX + name))
        except NotFound:
            pass
        return [Delete(item.key, item.revision) for item in items]

    async def _new_invite(self, name: str, actor: str) -> Invite:
        pref = await self.auth.auth_preference()
        token = new_secret(24)
        expires = self._clock.now() + pref.spec.invite_ttl
        otp_secret = pyotp.random_base32() if self._otp_required(pref.spec.second_factor) else ""
        record = {"user": name, "otp_secret": otp_secret}
        invite = Item(
            key=INVITE_PREFIX + hash_secret(token),
            value=json.dumps(record).encode(),
            expires=expires,
        )
        fate = _fate_item(token, name, expires)
        await self.auth.audited(
            "user.invite",
            [Create(invite), Put(fate)],
            actor,
            f"user/{name}",
            expires=expires.isoformat(),
        )
        # The proxy's address (the first login origin) when there is one: users reach the
        # cluster there, and its /web/invite page says how to accept the invite.
        base = (self.auth.deps.webauthn_origins or (self.auth.deps.public_url,))[0]
        url = f"{base}/web/invite/{token}"
        return Invite(user=name, token=token, url=url, expires=expires)

    @staticmethod
    def _otp_required(second_factor: str) -> bool:
        return second_factor in ("otp", "on")

    async def _invite_record(self, token: str, remote_addr: str) -> tuple[Item, dict[str, str]]:
        try:
            item = await self._backend.get(INVITE_PREFIX + hash_secret(token))
        except NotFound:
            await self.auth.audit.emit(
                "user.password_set",
                outcome="failure",
                remote_addr=remote_addr,
                reason="unknown, expired or used invite",
                method="invite",
            )
            raise AccessDenied(
                "invite is invalid, expired or already used; ask an admin for a new one "
                "(bctl users reset NAME)"
            ) from None
        return item, json.loads(item.value)

    async def invite_state(self, token: str) -> str:
        """What the invite page says of ``token``: ``valid``, ``used``, ``expired``, ``revoked``
        (a reset or deletion of the user withdrew it) or ``unknown`` (never an invite, or
        forgotten :data:`~bastion.auth.server.INVITE_MEMORY` after its expiry). Only the
        holder of the token can ask; it names no user."""
        key = hash_secret(token)
        try:
            await self._backend.get(INVITE_PREFIX + key)
            return "valid"
        except NotFound:
            pass
        try:
            fate = json.loads((await self._backend.get(INVITE_FATE_PREFIX + key)).value)
        except (NotFound, ValueError):
            return "unknown"
        if fate.get("used"):
            return "used"
        expires = fate.get("expires")
        if isinstance(expires, str) and datetime.fromisoformat(expires) <= self._clock.now():
            return "expired"
        return "revoked"

    async def start_invite(self, token: str, remote_addr: str = "") -> InviteInfo:
        """What the client needs to show before asking for a password (and the TOTP secret)."""
        _, record = await self._invite_record(token, remote_addr)
        secret = record["otp_secret"]
        uri = ""
        if secret:
            uri = pyotp.TOTP(secret).provisioning_uri(
                name=record["user"], issuer_name=f"Bastion {self.auth.cluster}"
            )
        pref = await self.auth.auth_preference()
        return InviteInfo(
            user=record["user"],
            otp_required=bool(secret),
            otp_secret=secret,
            otp_uri=uri,
            second_factor=pref.spec.second_factor,
            webauthn_allowed=mfa_policy.webauthn_enabled(pref.spec.second_factor),
        )

    async def invite_webauthn_options(self, token: str, remote_addr: str = "") -> dict[str, object]:
        """Registration options for the invited user's security key (``--mfa=webauthn``)."""
        _, record = await self._invite_record(token, remote_addr)
        return await self.auth.mfa.begin_registration(record["user"])

    async def complete_invite(
        self,
        token: str,
        password: str,
        otp_code: str,
        public_key: str,
        ttl: timedelta,
        remote_addr: str,
        webauthn: dict[str, object] | None = None,
        device_name: str = "",
        binding: KeyBinding = NO_BINDING,
    ) -> UserCerts:
        """Set the password and register the second factor: the TOTP secret of the invite
        (``otp_code``), or a WebAuthn key (``webauthn``: the registration response).
        ``binding``: the device ceremony and a TPM-held SSH key, as for :meth:`login`."""
        item, record = await self._invite_record(token, remote_addr)
        name = record["user"]
        check_password_strength(password)
        parse_public_key(public_key)
        check_binding(binding)
        creds = await self.auth.credentials.get(name)
        creds.set_password(password)
        device: MFADevice | None = None
        totp_step = 0
        pref = await self.auth.auth_preference()
        if webauthn is not None:
            device = await self.auth.mfa.finish_registration(
                name, device_name or "key", webauthn, remote_addr
            )
        elif pref.spec.second_factor == "webauthn":
            raise BadParameter(
                "this cluster requires a security key: accept the invite with bsh login "
                "--invite=TOKEN --mfa=webauthn"
            )
        elif record["otp_secret"]:
            step = verify_totp(record["otp_secret"], otp_code, self._clock.now(), 0)
            if step is None:
                await self.auth.audit.emit(
                    "user.password_set",
                    outcome="failure",
                    user=name,
                    remote_addr=remote_addr,
                    reason="wrong TOTP code during invite",
                )
                raise AuthenticationFailed(
                    "the TOTP code is wrong: check your authenticator app's clock and try again"
                )
            totp_step = step
        # The invite is single-use (whoever deletes it first wins); spending it, the new
        # password and the event are one transaction. The TOTP device (bastion.mfa) follows,
        # with its own mfa.add event: the completion of ``totp_device: pending``.
        if totp_step:  # what mfa.record_totp writes too, so both writes store the same bytes
            creds.totp_secret, creds.totp_last_step = record["otp_secret"], totp_step
        spend = Delete(item.key, expected_revision=item.revision)
        used = Put(_fate_item(token, name, item.expires, used=self._clock.now()))
        pending = {"totp_device": "pending"} if totp_step else {}
        try:
            await self.auth.audited(
                "user.password_set",
                [spend, used, self.auth.credentials.put_op(name, creds)],
                name,
                "",
                remote_addr=remote_addr,
                method="invite",
                **pending,
            )
        except (NotFound, CompareFailed) as exc:
            if exc.key != item.key:
                raise
            raise AccessDenied("invite was already used") from None
        if totp_step:
            device = await self.auth.mfa.record_totp(
                name, device_name or "otp", record["otp_secret"], totp_step, remote_addr
            )
        user = await self.auth.users.get(name)
        return await self._issue(
            user,
            public_key,
            ttl,
            remote_addr,
            method="invite",
            mfa_device=device,
            binding=binding,
        )

    async def change_password(
        self,
        name: str,
        current: str,
        new: str,
        remote_addr: str,
        webauthn: dict[str, Any] | None = None,
        otp: str = "",
    ) -> None:
        """A signed-in user's new password: the current one (checked like a login: lockout,
        locks, failures audited) and a proof from one of their devices (scope
        ``password:change``, :meth:`MFAService.confirm_with_existing`); the credentials write
        and ``user.password_set`` (method ``change``) are one transaction.

        Raises:
            BadParameter: the new password breaks the policy. AuthenticationFailed: the current
            password is wrong. AccessDenied: no valid second-factor proof, locked out.
        """
        check_password_strength(new)
        try:
            await self._check_password(name, current, remote_addr)
        except AuthenticationFailed:
            raise AuthenticationFailed("the current password is wrong") from None
        creds = await self.auth.credentials.get(name)
        try:
            if otp and not webauthn and creds.totp_secret:
                # The TOTP step is spent in the password's own transaction (no unaudited write).
                step = verify_totp(creds.totp_secret, otp, self._clock.now(), creds.totp_last_step)
                if step is None:
                    raise AccessDenied("the TOTP code is wrong or was already used")
                creds.totp_last_step = step
            else:
                await self.auth.mfa.confirm_with_existing(name, "password:change", webauthn, otp)
        except BastionError as exc:
            await self.auth.audit.emit(
                "user.password_set",
                outcome="failure",
                user=name,
                target=f"user/{name}",
                remote_addr=remote_addr,
                method="change",
                reason=exc.message,
            )
            raise
        creds.set_password(new)
        await self.auth.audited(
            "user.password_set",
            [self.auth.credentials.put_op(name, creds)],
            name,
            f"user/{name}",
            remote_addr=remote_addr,
            method="change",
        )

    # ---- login ---------------------------------------------------------------------------------

    async def _check_password(
        self, name: str, password: str, remote_addr: str
    ) -> tuple[User, AuthPreference]:
        """The first factor, with lockout and locks. Every failure is audited.

        Raises:
            AuthenticationFailed (unknown user or wrong password, indistinguishable),
            AccessDenied (locked out), Locked (a lock covers the user).
        """
        pref = await self.auth.auth_preference()
        await self._refuse_locked_out(name, remote_addr, "password")
        try:
            user = await self.auth.users.get(name)
        except NotFound:
            burn_time_for_unknown_user(password)  # as long as a real check
            await self._failed(name, remote_addr, "unknown user")
            raise AuthenticationFailed(BAD_CREDENTIALS) from None
        creds = await self.auth.credentials.get(name)
        if not creds.check_password(password):
            await self._failed(name, remote_addr, "wrong password")
            raise AuthenticationFailed(BAD_CREDENTIALS)
        # Locked users learn it after the password, before a one-time code is spent.
        await self._refuse_locked(
            user, LockTargets(user=name, roles=tuple(user.spec.roles)), remote_addr
        )
        return user, pref

    async def _refuse_locked_out(self, name: str, remote_addr: str, method: str) -> None:
        """Raises: AccessDenied while the name is locked out after failed logins, with the same
        words for real and unknown names."""
        try:
            item = await self._backend.get(LOCKOUT_PREFIX + name)
        except NotFound:
            return
        await self._failed(name, remote_addr, "user is locked out", count=False, method=method)
        until = item.expires or self._clock.now()
        raise AccessDenied(
            f"too many failed logins: this account is locked until {until:%Y-%m-%d %H:%M} UTC; "
            "try again then, or ask an admin (bctl users reset)"
        )

    async def begin_login(self, name: str, password: str, remote_addr: str) -> LoginChallenge:
        """Check the password and say which second factor to send (with WebAuthn options)."""
        _, pref = await self._check_password(name, password, remote_addr)
        sf = pref.spec.second_factor
        devices = await self.auth.mfa.list_devices(name)
        has_totp = any(d.type == "totp" for d in devices)
        options = None
        if mfa_policy.webauthn_enabled(sf) and usable_webauthn(devices):
            options = await self.auth.mfa.begin_challenge(name, "login")
        return LoginChallenge(
            totp=has_totp and (mfa_policy.totp_enabled(sf) or sf == "off"), webauthn=options
        )

    async def login(
        self,
        name: str,
        password: str,
        otp_code: str,
        public_key: str,
        ttl: timedelta,
        remote_addr: str,
        webauthn: dict[str, object] | None = None,
        device: LoginProof | None = None,
        ssh_public_key: str = "",
    ) -> UserCerts:
        """Password plus the second factor the cluster and the user's devices call for: a
        WebAuthn assertion for scope ``login`` (from :meth:`begin_login`) or a TOTP code.

        ``device``: the machine's device proof sent with the request, verified once both
        factors passed and before the one issuance, which then carries the device; a refused
        proof leaves the login standing without it (``UserCerts.device_error`` says why).

        ``ssh_public_key``: a TPM-held key for the SSH certificate (``bsh login
        --key-store=tpm``), which ``device.key_certification`` must certify."""
        parse_public_key(public_key)
        binding = KeyBinding(device=device, ssh_public_key=ssh_public_key)
        check_binding(binding)
        user, pref = await self._check_password(name, password, remote_addr)
        sf = pref.spec.second_factor
        devices = await self.auth.mfa.list_devices(name)
        totp = next((d for d in devices if d.type == "totp"), None)
        if webauthn is not None:
            verified = await self._verify_webauthn(name, sf, webauthn, remote_addr)
            return await self._issue(
                user,
                public_key,
                ttl,
                remote_addr,
                method="password+webauthn",
                mfa=verified,
                binding=binding,
            )
        keys = usable_webauthn(devices) if sf != "off" else []
        if not (mfa_policy.required_kinds(sf) or totp or keys):
            return await self._issue(
                user,
                public_key,
                ttl,
                remote_addr,
                method="password",
                binding=binding,
            )
        if totp is not None and (mfa_policy.totp_enabled(sf) or sf == "off"):
            creds = await self.auth.credentials.get(name)
            step = verify_totp(creds.totp_secret, otp_code, self._clock.now(), creds.totp_last_step)
            if step is None:
                await self._failed(name, remote_addr, "wrong or reused TOTP code")
                raise AuthenticationFailed(BAD_CREDENTIALS)
            creds.totp_last_step = step
            await self.auth.credentials.put(name, creds)
            await self.auth.mfa.touch(totp)
            return await self._issue(
                user,
                public_key,
                ttl,
                remote_addr,
                method="password+otp",
                mfa_device=totp,
                binding=binding,
            )
        if keys and mfa_policy.webauthn_enabled(sf):
            await self._failed(name, remote_addr, "no WebAuthn assertion sent", count=False)
            raise AuthenticationFailed(
                "this account signs in with a security key: use bsh login (it asks the key), "
                "or add a TOTP device if the cluster allows it"
            )
        await self._failed(name, remote_addr, "no usable MFA device registered", count=False)
        raise AccessDenied(
            f"the cluster requires a second factor (second_factor: {sf}) and none usable is "
            "registered for this user; ask an admin for bctl users reset"
        )

    async def _verify_webauthn(
        self, name: str, sf: str, response: dict[str, object], remote_addr: str
    ) -> MFAVerified:
        if not mfa_policy.webauthn_enabled(sf):
            await self._failed(
                name, remote_addr, "WebAuthn not enabled", count=False, method="password+webauthn"
            )
            raise BadParameter(f"WebAuthn is not enabled on this cluster (second_factor: {sf})")
        try:
            return await self.auth.mfa.verify_challenge(name, "login", response)
        except AccessDenied as exc:
            await self._failed(name, remote_addr, exc.message, method="password+webauthn")
            raise

    async def login_passwordless(
        self,
        response: dict[str, object],
        public_key: str,
        ttl: timedelta,
        remote_addr: str,
        binding: KeyBinding = NO_BINDING,
    ) -> UserCerts:
        """A passkey alone: the assertion (scope ``login``, user verification required) names
        the user through its user handle. Only a device registered for passwordless login may
        do this; a key registered as a second factor is refused (audited with its owner and
        device: its signature verified, so it is the owner's key used the wrong way).
        ``binding``: the device ceremony and a TPM-held SSH key, as for :meth:`login`."""
        from bastion.mfa.service import SecondFactorOnly

        parse_public_key(public_key)
        check_binding(binding)
        pref = await self.auth.auth_preference()
        sf = pref.spec.second_factor
        if not mfa_policy.webauthn_enabled(sf) or not pref.spec.allow_passwordless:
            await self._failed("", remote_addr, "passwordless disabled", False, "passwordless")
            raise AccessDenied("passwordless login is not enabled on this cluster")
        try:
            verified = await self.auth.mfa.verify_challenge(None, "login", response)
        except SecondFactorOnly as exc:
            await self.auth.audit.emit(
                "user.login",
                outcome="failure",
                user=exc.user,
                remote_addr=remote_addr,
                reason="second-factor device used for passwordless login",
                method="passwordless",
                mfa_device=exc.device_id,
            )
            raise
        except AccessDenied as exc:
            await self._failed("", remote_addr, exc.message, count=False, method="passwordless")
            raise
        try:
            user = await self.auth.users.get(verified.user)
        except NotFound:
            await self._failed(verified.user, remote_addr, "user deleted", False, "passwordless")
            raise AuthenticationFailed(BAD_CREDENTIALS) from None
        await self._refuse_locked_out(user.name, remote_addr, "passwordless")
        await self._refuse_locked(
            user, LockTargets(user=user.name, roles=tuple(user.spec.roles)), remote_addr
        )
        return await self._issue(
            user,
            public_key,
            ttl,
            remote_addr,
            method="passwordless",
            mfa=verified,
            binding=binding,
        )

    async def _issue(
        self,
        user: User,
        public_key: str,
        ttl: timedelta,
        remote_addr: str,
        method: str,
        *,
        mfa: MFAVerified | None = None,
        mfa_device: MFADevice | None = None,
        binding: KeyBinding = NO_BINDING,
    ) -> UserCerts:
        roles = [await self.auth.roles.get(r) for r in user.spec.roles]
        role_set = RoleSet.from_roles(roles, user.spec.traits)
        identity = self.auth.issuer.user_identity(
            cluster=self.auth.cluster,
            user=user.name,
            roles=user.spec.roles,
            traits=user.spec.traits,
            role_set=role_set,
            requested_ttl=ttl,
            pinned_ip=remote_addr,
            user_epoch=user.spec.epoch,
        )
        device_id = mfa.device_id if mfa else mfa_device.id if mfa_device else ""
        aaguid = mfa.aaguid if mfa else mfa_device.aaguid if mfa_device else ""
        if device_id:
            identity = identity.model_copy(update={"mfa_device": device_id})
        await self._refuse_locked(user, identity_targets(identity), remote_addr)
        try:  # the device's proof and the key it certified, then the one issuance
            certs = await issue_bound(self.auth, identity, public_key, remote_addr, binding)
        except AccessDenied as exc:
            if exc.message == HARDWARE_KEY_MESSAGE or exc.message.startswith("key attestation"):
                await self._failed(user.name, remote_addr, exc.message, False, method)
            raise
        identity = certs.identity
        extra = {"mfa_device": device_id, "aaguid": aaguid} if device_id else {}
        if identity.device_id:
            extra["device_id"] = identity.device_id
        await self.auth.audit.emit(
            "user.login", user=user.name, remote_addr=remote_addr, method=method, **extra
        )
        return certs

    async def _refuse_locked(self, user: User, targets: LockTargets, remote_addr: str) -> None:
        """Raises: Locked (audited as a failed user.login) when a lock covers ``targets``."""
        locked = await self.auth.lock_decision(targets)
        if not locked.allowed:
            await self._failed(user.name, remote_addr, locked.reason, count=False)
            locked.raise_if_denied()

    async def _failed(
        self,
        name: str,
        remote_addr: str,
        reason: str,
        count: bool = True,
        method: str = "password",
    ) -> None:
        await self.auth.audit.emit(
            "user.login",
            outcome="failure",
            user=name,
            remote_addr=remote_addr,
            reason=reason,
            method=method,
        )
        if not name:
            return
        if not count:
            return
        pref = (await self.auth.auth_preference()).spec
        now = self._clock.now()
        await self._backend.create(
            Item(
                key=f"{ATTEMPT_PREFIX}{name}/{now.timestamp():.6f}-{new_secret(4)}",
                value=b"1",
                expires=now + pref.lockout_window,
            )
        )
        attempts = await self._backend.get_range(f"{ATTEMPT_PREFIX}{name}/")
        if len(attempts) < pref.max_failed_logins:
            return
        until = now + pref.lockout_duration
        reason = f"{len(attempts)} failed logins"
        lockout = Put(Item(key=LOCKOUT_PREFIX + name, value=reason.encode(), expires=until))

        async def lock(user: User) -> tuple[User, list[Op]]:
            user.spec.status.locked_until = until
            user.spec.status.lock_reason = reason
            return user, [lockout, *await self._attempt_ops(name)]

        fields: dict[str, Any] = {
            "outcome": "failure",
            "remote_addr": remote_addr,
            "until": until.isoformat(),
            "reason": reason,
        }
        try:  # the lockout, the reset counters and the event: one transaction
            await self.auth.audited_modify(
                self.auth.users, name, lock, "user.locked_out", name, "", **fields
            )
        except NotFound:  # no such user: the name is locked all the same
            ops = [lockout, *await self._attempt_ops(name)]
            await self.auth.audited("user.locked_out", ops, name, "", known_user=False, **fields)

    async def unlock(self, name: str, actor: str = SYSTEM_ACTOR) -> None:
        """Lift a lockout and reset the failed-login counters (event ``user.unlocked``)."""

        async def clear(user: User) -> tuple[User, list[Op]]:
            return _unlocked(user), await self._attempt_ops(name)

        await self.auth.audited_modify(
            self.auth.users, name, clear, "user.unlocked", actor, f"user/{name}"
        )


def _unlocked(user: User) -> User:
    user.spec.status.locked_until = None
    user.spec.status.lock_reason = ""
    return user


def _fate_item(
    token: str, user: str, expires: datetime | None, used: datetime | None = None
) -> Item:
    """The invite's fate record (:data:`~bastion.auth.server.INVITE_FATE_PREFIX`)."""
    record: dict[str, str] = {"user": user, "expires": expires.isoformat() if expires else ""}
    if used is not None:
        record["used"] = used.isoformat()
    return Item(
        key=INVITE_FATE_PREFIX + hash_secret(token),
        value=json.dumps(record).encode(),
        expires=(expires + INVITE_MEMORY) if expires else None,
    )
