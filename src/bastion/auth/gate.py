"""The one authentication gate: every authenticated request and connection passes here.

Layer: auth. The API middleware (certificates and web session cookies on the auth and proxy
ports) and the proxy's SSH route call :meth:`Gate.admit` before anything else, so a control
that must hold "everywhere" lives in exactly one place (ARCHITECTURE.md 6.1):

* the certificate kind fits the route's audience (:data:`AUDIENCE_KINDS`): host certificates only
  on agent routes, user certificates only on user routes; a per-session MFA certificate is for its
  one SSH target, never for the API;
* the user still exists (local users and bots; SSO users have no stored record, their identity
  provider and locks govern them);
* the certificate or web session was issued in the user's current epoch (``UserSpec.epoch``): a
  reset, a deletion and re-creation, or a change that narrows the user's access replaces the
  epoch and so revokes everything issued before it;
* no lock matches (user, role, login, device, MFA device, access request, bot, node, user epoch),
  decided from the process's lock watcher (in memory, current through a backend watch; in strict
  mode a stale view refuses), or read from the backend where no watcher runs (a backend error
  refuses: fail closed).

:func:`refusal` is the pure decision; :class:`Gate` reads the user and the locks, and audits each
refusal once (``access.denied`` with the route and the reason). The gate depends on three small
protocols, so that it runs wherever identities arrive: the auth process passes its stores
(:meth:`Gate.for_auth`: users and locks from the backend, events into the audit log), a proxy in
its own process passes its watch-fed caches and its durable event spool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bastion.audit.emitter import Emitter
from bastion.auth.devices import AuthDeviceTrust
from bastion.auth.server import AuthServer
from bastion.contract.base import Audience
from bastion.errors import AccessDenied, AuthenticationFailed, BastionError, NotFound
from bastion.locks.matcher import LockDecision, Locked, LockTargets, identity_targets
from bastion.rbac.device_trust import DeviceRefusal
from bastion.rbac.session_mfa import is_session_identity
from bastion.types.access import User
from bastion.types.identity import Identity

__all__ = [
    "AUDIENCE_KINDS",
    "Audience",
    "Gate",
    "GateLocks",
    "IdentityGate",
    "Refusal",
    "UserLookup",
    "has_user_record",
    "refusal",
]

PEOPLE = frozenset({"user", "bot", "admin"})
AUDIENCE_KINDS: dict[Audience, frozenset[str]] = {
    "user": PEOPLE,
    "web": PEOPLE,
    "host": frozenset({"host"}),
    "any": PEOPLE | {"host"},
    "ssh": PEOPLE,
    "scim": frozenset(),
}
"""Identity kinds each authenticated audience admits. ``scim`` admits no certificate identity:
its callers are identity providers with a connector's bearer token, which the API middleware
checks for that audience (:mod:`bastion.api.scim`, :class:`bastion.auth.scim.ScimTokens`)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    """For the audit log and the operator: the whole truth."""
    error: BastionError
    """What the caller is told."""


def has_user_record(identity: Identity) -> bool:
    """Is this identity backed by a stored user (whose existence and epoch the gate checks)?

    Local users and bots are; SSO users (their identity provider is the record), hosts and the
    local admin identity (bctl on the auth host) are not.
    """
    return (
        identity.kind in ("user", "bot")
        and "sso_connector" not in identity.traits
        and not identity.origin_cluster  # a trusted root's user (docs/trusted-clusters.md)
    )


def refusal(
    identity: Identity, audience: Audience, user: User | None, locks: LockDecision
) -> Refusal | None:
    """Should this identity be refused on a route for ``audience``?

    Args:
        identity: from the verified certificate or web session.
        audience: the route's declared audience (never ``public``: nothing to admit there).
        user: the stored user when :func:`has_user_record`, None when it does not exist (or the
            identity has no record; then it is not consulted).
        locks: the lock decision for the identity's targets.
    """
    if is_session_identity(identity) and audience != "ssh":
        return Refusal(
            "per-session MFA certificate used outside its SSH target",
            AccessDenied(
                "a per-session MFA certificate is valid only for its node and login, not for "
                "the API; use your login certificate"
            ),
        )
    allowed = AUDIENCE_KINDS.get(audience, frozenset())
    if identity.kind not in allowed:
        wanted = "agents (host certificates)" if audience == "host" else "users"
        return Refusal(
            f"a {identity.kind} identity on a route for {audience}",
            AccessDenied(f"access denied: this endpoint is for {wanted}"),
        )
    if has_user_record(identity):
        again = AuthenticationFailed(
            "your certificate is no longer valid (your account was reset, removed or its access "
            "narrowed); log in again with bsh login"
        )
        if user is None:
            return Refusal(f"user {identity.user!r} no longer exists", again)
        if user.spec.epoch != identity.user_epoch:
            return Refusal(
                f"certificate of user {identity.user!r} predates a reset, re-creation or "
                "narrowing change (stale user epoch)",
                again,
            )
    if not locks.allowed:
        return Refusal(
            locks.reason, Locked(locks.reason, locks.locks[0].name if locks.locks else "")
        )
    return None


class IdentityGate(Protocol):
    """What routes outside the API (the proxy's SSH route and tunnels) need of the gate."""

    async def admit(
        self,
        identity: Identity,
        audience: Audience,
        route: str,
        remote_addr: str,
        *,
        login: str = "",
        nodes: Sequence[str] = (),
    ) -> None: ...

    async def refusal(
        self, identity: Identity, audience: Audience, *, login: str = "", nodes: Sequence[str] = ()
    ) -> Refusal | None: ...


class UserLookup(Protocol):
    """Where the gate reads a stored user (existence and epoch)."""

    async def get(self, name: str) -> User:
        """Raises: NotFound when there is no such user; any other error refuses (fail closed)."""
        ...


class DeviceTrust(Protocol):
    """Where the gate learns whether an identity lacks the trusted device its policy requires
    (:class:`bastion.auth.devices.AuthDeviceTrust`)."""

    async def refusal(self, identity: Identity) -> DeviceRefusal | None: ...


class GateLocks(Protocol):
    """Where the gate reads the lock decision for an access."""

    async def lock_access(self, identity: Identity, targets: LockTargets) -> LockDecision: ...


class Gate:
    """Admit or refuse identities for the auth API, the web pages and the proxy's routes.

    Args:
        users: stored users (the auth process's store, or a proxy's watch-fed cache).
        locks: lock decisions (the auth server, or a proxy's lock watcher).
        audit: where refusals are recorded (the audit log, or a proxy's event spool).
        recheck: the authoritative lookup to ask before refusing when ``users`` (a cache, which
            may lag behind auth by a moment) has no such user or an older epoch than the
            certificate: a user created or reset a moment ago is not refused by a stale cache.
    """

    def __init__(
        self,
        users: UserLookup,
        locks: GateLocks,
        audit: Emitter,
        *,
        recheck: UserLookup | None = None,
        devices: DeviceTrust | None = None,
    ) -> None:
        self._devices = devices
        self._users = users
        self._locks = locks
        self._audit = audit
        self._recheck = recheck

    @classmethod
    def for_auth(cls, auth: AuthServer) -> Gate:
        """The gate of the auth process: its users (the watched copy, in step with this
        process's writes; the store itself before a refusal, for another auth server's
        change that has not arrived yet), its lock view, its audit log."""
        return cls(
            auth.watched_users,
            auth,
            auth.audit,
            recheck=auth.users,
            devices=AuthDeviceTrust(auth),
        )

    async def admit(
        self,
        identity: Identity,
        audience: Audience,
        route: str,
        remote_addr: str,
        *,
        login: str = "",
        nodes: Sequence[str] = (),
    ) -> None:
        """Raises: the refusal's error (audited once as ``access.denied``)."""
        found = await self.refusal(identity, audience, login=login, nodes=nodes)
        if found is None:
            return
        await self._audit.emit(
            "access.denied",
            outcome="failure",
            user=identity.user,
            login=login,
            remote_addr=remote_addr,
            target=route,
            reason=found.reason,
            identity_kind=identity.kind,
            mfa_device=identity.mfa_device,
        )
        raise found.error

    async def refusal(
        self, identity: Identity, audience: Audience, *, login: str = "", nodes: Sequence[str] = ()
    ) -> Refusal | None:
        """The decision without auditing it (for callers that audit in their own words).

        ``login`` and ``nodes`` add what a connection knows to the lock targets."""
        user: User | None = None
        if has_user_record(identity):
            user = await _lookup(self._users, identity.user)
            stale = user is None or user.spec.epoch != identity.user_epoch
            if stale and self._recheck is not None:
                user = await _lookup(self._recheck, identity.user)
        targets = identity_targets(identity, login=login, nodes=nodes)
        locks = await self._locks.lock_access(identity, targets)
        found = refusal(identity, audience, user, locks)
        if found is None and audience == "ssh" and self._devices is not None:
            # Device trust governs access to resources (the SSH route), not the API: a user
            # without a trusted device can still reach auth to enroll one.
            device = await self._devices.refusal(identity)
            if device is not None:
                return Refusal(device.reason, AccessDenied(device.message))
        return found


async def _lookup(users: UserLookup, name: str) -> User | None:
    try:
        return await users.get(name)
    except NotFound:
        return None
