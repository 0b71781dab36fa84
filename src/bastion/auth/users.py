"""Local users: invites, password (+ TOTP) login, lockout after repeated failures.

Every attempt is audited (user.login with outcome, method and reason). Messages to the client
never say whether a user exists; the audit log says exactly what happened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp

from bastion.auth.credentials import (
    burn_time_for_unknown_user,
    check_password_strength,
    hash_secret,
    new_secret,
    verify_totp,
)
from bastion.auth.issuer import UserCerts, parse_public_key
from bastion.auth.server import AuthServer
from bastion.backend.base import Item
from bastion.errors import AccessDenied, AuthenticationFailed, BadParameter, NotFound
from bastion.locks.matcher import LockTargets, identity_targets
from bastion.rbac.checker import RoleSet
from bastion.types.access import User, UserSpec
from bastion.types.meta import Metadata

__all__ = ["Invite", "InviteInfo", "UserService"]

INVITE_PREFIX = "invites/"
ATTEMPT_PREFIX = "login_attempts/"
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
        spec = UserSpec(roles=roles, traits={**traits, **({"logins": logins} if logins else {})})
        try:
            user = User(metadata=Metadata(name=name), spec=spec)
        except ValueError as exc:
            raise BadParameter(f'user "{name}": {exc}') from None
        await self.auth.create_resource(user, actor, force=False)
        return await self._new_invite(name, actor)

    async def reset_user(self, name: str, actor: str) -> Invite:
        """Forget password and TOTP; the user sets new ones with a fresh invite."""
        await self.auth.users.get(name)
        await self.auth.credentials.delete(name)
        await self.unlock(name)
        await self.auth.audit.emit("user.reset", user=actor, target=f"user/{name}")
        return await self._new_invite(name, actor)

    async def _new_invite(self, name: str, actor: str) -> Invite:
        pref = await self.auth.auth_preference()
        token = new_secret(24)
        expires = self._clock.now() + pref.spec.invite_ttl
        otp_secret = pyotp.random_base32() if self._otp_required(pref.spec.second_factor) else ""
        record = {"user": name, "otp_secret": otp_secret}
        await self._backend.create(
            Item(
                key=INVITE_PREFIX + hash_secret(token),
                value=json.dumps(record).encode(),
                expires=expires,
            )
        )
        await self.auth.audit.emit(
            "user.invite", user=actor, target=f"user/{name}", expires=expires.isoformat()
        )
        url = f"{self.auth.deps.public_url}/web/invite/{token}"
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

    async def start_invite(self, token: str, remote_addr: str = "") -> InviteInfo:
        """What the client needs to show before asking for a password (and the TOTP secret)."""
        _, record = await self._invite_record(token, remote_addr)
        secret = record["otp_secret"]
        uri = ""
        if secret:
            uri = pyotp.TOTP(secret).provisioning_uri(
                name=record["user"], issuer_name=f"Bastion {self.auth.cluster}"
            )
        return InviteInfo(
            user=record["user"], otp_required=bool(secret), otp_secret=secret, otp_uri=uri
        )

    async def complete_invite(
        self,
        token: str,
        password: str,
        otp_code: str,
        public_key: str,
        ttl: timedelta,
        remote_addr: str,
    ) -> UserCerts:
        item, record = await self._invite_record(token, remote_addr)
        name = record["user"]
        check_password_strength(password)
        parse_public_key(public_key)
        creds = await self.auth.credentials.get(name)
        creds.set_password(password)
        if record["otp_secret"]:
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
            creds.totp_secret = record["otp_secret"]
            creds.totp_last_step = step
        try:  # the invite is single-use: whoever deletes it first wins
            await self._backend.delete(item.key, expected_revision=item.revision)
        except NotFound:
            raise AccessDenied("invite was already used") from None
        await self.auth.credentials.put(name, creds)
        await self.auth.audit.emit(
            "user.password_set", user=name, remote_addr=remote_addr, method="invite"
        )
        user = await self.auth.users.get(name)
        return await self._issue(user, public_key, ttl, remote_addr, method="invite")

    # ---- login ---------------------------------------------------------------------------------

    async def login(
        self,
        name: str,
        password: str,
        otp_code: str,
        public_key: str,
        ttl: timedelta,
        remote_addr: str,
    ) -> UserCerts:
        parse_public_key(public_key)
        pref = await self.auth.auth_preference()
        try:
            user = await self.auth.users.get(name)
        except NotFound:
            burn_time_for_unknown_user(password)
            await self._failed(name, remote_addr, "unknown user", count=False)
            raise AuthenticationFailed(BAD_CREDENTIALS) from None
        now = self._clock.now()
        locked_until = user.spec.status.locked_until
        if locked_until and locked_until > now:
            await self._failed(name, remote_addr, "user is locked out", count=False)
            raise AccessDenied(
                f"too many failed logins: {name} is locked until {locked_until:%Y-%m-%d %H:%M} "
                "UTC; an admin can unlock with bctl users reset"
            )
        creds = await self.auth.credentials.get(name)
        if not creds.check_password(password):
            await self._failed(name, remote_addr, "wrong password")
            raise AuthenticationFailed(BAD_CREDENTIALS)
        # Locked users learn it after the password, before a one-time code is spent.
        await self._refuse_locked(
            user, LockTargets(user=name, roles=tuple(user.spec.roles)), remote_addr
        )
        if self._otp_required(pref.spec.second_factor) or creds.totp_secret:
            if not creds.totp_secret:
                await self._failed(name, remote_addr, "no TOTP device registered", count=False)
                raise AccessDenied(
                    "the cluster requires a second factor and none is registered for this user; "
                    "ask an admin for bctl users reset"
                )
            step = verify_totp(creds.totp_secret, otp_code, now, creds.totp_last_step)
            if step is None:
                await self._failed(name, remote_addr, "wrong or reused TOTP code")
                raise AuthenticationFailed(BAD_CREDENTIALS)
            creds.totp_last_step = step
            await self.auth.credentials.put(name, creds)
        return await self._issue(
            user,
            public_key,
            ttl,
            remote_addr,
            method="password+otp" if creds.totp_secret else "password",
        )

    async def _issue(
        self, user: User, public_key: str, ttl: timedelta, remote_addr: str, method: str
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
        )
        await self._refuse_locked(user, identity_targets(identity), remote_addr)
        certs = await self.auth.issuer.issue_user(identity, public_key, remote_addr)
        await self.auth.audit.emit(
            "user.login", user=user.name, remote_addr=remote_addr, method=method
        )
        return certs

    async def _refuse_locked(self, user: User, targets: LockTargets, remote_addr: str) -> None:
        """Raises: Locked (audited as a failed user.login) when a lock covers ``targets``."""
        locked = await self.auth.lock_decision(targets)
        if not locked.allowed:
            await self._failed(user.name, remote_addr, locked.reason, count=False)
            locked.raise_if_denied()

    async def _failed(self, name: str, remote_addr: str, reason: str, count: bool = True) -> None:
        await self.auth.audit.emit(
            "user.login",
            outcome="failure",
            user=name,
            remote_addr=remote_addr,
            reason=reason,
            method="password",
        )
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

        def lock(user: User) -> User:
            user.spec.status.locked_until = until
            user.spec.status.lock_reason = f"{len(attempts)} failed logins"
            return user

        try:
            await self.auth.users.modify(name, lock)
        except NotFound:
            return
        await self._backend.delete_range(f"{ATTEMPT_PREFIX}{name}/")
        await self.auth.audit.emit(
            "user.locked_out",
            outcome="failure",
            user=name,
            remote_addr=remote_addr,
            until=until.isoformat(),
            reason=f"{len(attempts)} failed logins",
        )

    async def unlock(self, name: str) -> None:
        def clear(user: User) -> User:
            user.spec.status.locked_until = None
            user.spec.status.lock_reason = ""
            return user

        await self.auth.users.modify(name, clear)
        await self._backend.delete_range(f"{ATTEMPT_PREFIX}{name}/")
