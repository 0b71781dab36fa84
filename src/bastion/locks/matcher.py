"""Which locks apply to a connection, and whether access is allowed: pure functions.

Layer: policy (like :mod:`bastion.rbac.checker`): values in, a value out, no IO and no clock
reads (``now`` is passed in). :mod:`bastion.locks.watcher` keeps the lock state current and acts
on what these functions decide.

Semantics (Teleport's): a lock matches when *every* non-empty field of its target equals the
connection's value for that field (``role``: is among the identity's roles; ``node``: is the
node's name or host id; ``access_request``: is among the identity's active requests). An expired
lock never matches. In ``strict`` mode a lock view that is unhealthy (watch broken) or older than
``max_staleness`` refuses everything with "lock state unknown" (ARCHITECTURE.md 6.8: fail
closed); ``best_effort`` allows then.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from bastion.errors import AccessDenied
from bastion.types.access import Lock
from bastion.types.bots import bot_name_of
from bastion.types.identity import Identity

__all__ = [
    "DEFAULT_MAX_STALENESS",
    "LockDecision",
    "LockMode",
    "LockTargets",
    "LockView",
    "Locked",
    "decide",
    "describe_target",
    "effective_mode",
    "identity_targets",
    "lock_matches",
    "matching_locks",
]

LockMode = Literal["best_effort", "strict"]
DEFAULT_MAX_STALENESS = timedelta(seconds=30)
"""How old the lock state may be before ``strict`` mode refuses."""


class Locked(AccessDenied):
    """Access refused because of a lock (or, in strict mode, unknown lock state).

    Unlike other refusals the message is shown to the user as is: the lock message is the
    admin's note to them ("laptop stolen").
    """

    def __init__(self, reason: str, lock_name: str = "") -> None:
        super().__init__(f"access denied: {reason}")
        self.reason = reason
        """``locked: <message>`` or ``lock state unknown ...`` (for audit)."""
        self.lock_name = lock_name


@dataclass(frozen=True, slots=True)
class LockTargets:
    """What a connection or identity can be locked by (empty: that dimension is unknown)."""

    user: str = ""
    roles: tuple[str, ...] = ()
    login: str = ""
    nodes: tuple[str, ...] = ()
    """Names the target node is known by (name, host id)."""
    device: str = ""
    mfa_device: str = ""
    access_requests: tuple[str, ...] = ()
    bot: str = ""
    session: str = ""
    user_epoch: str = ""


@dataclass(frozen=True, slots=True)
class LockView:
    """A snapshot of the lock state as one process knows it."""

    locks: tuple[Lock, ...] = ()
    healthy: bool = False
    """True while the watch feeding this view is connected and initialised."""
    synced_at: datetime | None = None
    """When the view was last known to be current (None: never)."""


@dataclass(frozen=True, slots=True)
class LockDecision:
    allowed: bool
    reason: str = ""
    """``locked: <message>`` or ``lock state unknown: ...``; empty when allowed."""
    locks: tuple[Lock, ...] = field(default=())

    def raise_if_denied(self) -> None:
        """Raises: Locked when not allowed."""
        if not self.allowed:
            raise Locked(self.reason, self.locks[0].name if self.locks else "")


def identity_targets(
    identity: Identity,
    *,
    login: str = "",
    nodes: Iterable[str] = (),
    session: str = "",
    mfa_device: str = "",
) -> LockTargets:
    """Lock targets of a certificate identity plus what the connection adds.

    Host identities are lockable as nodes (by host id and hostname), never as users.
    """
    node_names = tuple(n for n in nodes if n)
    if identity.kind == "host":
        hostnames = identity.traits.get("hostname", ())
        return LockTargets(nodes=(*node_names, identity.host_id, *hostnames))
    return LockTargets(
        user=identity.user,
        roles=tuple(identity.roles),
        login=login,
        nodes=node_names,
        device=identity.device_id,
        mfa_device=mfa_device or identity.mfa_device,
        access_requests=tuple(identity.access_requests),
        bot=bot_name_of(identity.user) if identity.kind == "bot" else "",
        session=session,
        user_epoch=identity.user_epoch,
    )


def _expired(lock: Lock, now: datetime) -> bool:
    expires = lock.metadata.expires
    return expires is not None and expires <= now


def lock_matches(lock: Lock, targets: LockTargets, now: datetime) -> bool:
    """Every non-empty field of the lock's target equals the connection's; never when expired.

    Written as early exits: it runs for every lock on every request (the gate), and most locks
    differ in their first field."""
    if _expired(lock, now):
        return False
    t = lock.spec.target
    if (
        (t.user and t.user != targets.user)
        or (t.role and t.role not in targets.roles)
        or (t.login and t.login != targets.login)
        or (t.node and t.node not in targets.nodes)
        or (t.device and t.device != targets.device)
        or (t.mfa_device and t.mfa_device != targets.mfa_device)
        or (t.access_request and t.access_request not in targets.access_requests)
        or (t.bot and t.bot != targets.bot)
        or (t.session and t.session != targets.session)
        or (t.user_epoch and t.user_epoch != targets.user_epoch)
    ):
        return False
    return any(
        (t.user, t.role, t.login, t.node, t.device, t.mfa_device, t.access_request, t.bot)
        + (t.session, t.user_epoch)
    )


def matching_locks(locks: Iterable[Lock], targets: LockTargets, now: datetime) -> list[Lock]:
    """The locks that apply to ``targets`` at ``now``, in name order."""
    return sorted(
        (lock for lock in locks if lock_matches(lock, targets, now)), key=lambda lock: lock.name
    )


def describe_target(lock: Lock) -> str:
    """``user=alice,node=web1``: the lock's non-empty target fields."""
    return ",".join(f"{k}={v}" for k, v in lock.spec.target.model_dump().items() if v)


def _lock_reason(lock: Lock) -> str:
    return f"locked: {lock.spec.message or describe_target(lock)}"


def effective_mode(role_mode: str, cluster_mode: str) -> LockMode:
    """Strict if either the roles or the cluster default asks for it."""
    return "strict" if "strict" in (role_mode, cluster_mode) else "best_effort"


def decide(
    view: LockView,
    targets: LockTargets,
    mode: str,
    now: datetime,
    max_staleness: timedelta = DEFAULT_MAX_STALENESS,
) -> LockDecision:
    """May this access go ahead, given the locks this process knows?

    Args:
        view: the lock state.
        targets: what the access can be locked by.
        mode: ``strict`` or ``best_effort``.
        now: the time to evaluate expiry and staleness at.
        max_staleness: how old the view may be in strict mode.

    Returns:
        Refused with the first matching lock's message; refused with "lock state unknown" in
        strict mode when the view is unhealthy or stale; allowed otherwise.
    """
    found = matching_locks(view.locks, targets, now)
    if found:
        return LockDecision(False, _lock_reason(found[0]), tuple(found))
    if mode == "strict":
        if not view.healthy:
            return LockDecision(False, "lock state unknown: the lock watch is not connected")
        if view.synced_at is None or now - view.synced_at > max_staleness:
            return LockDecision(
                False,
                f"lock state unknown: not refreshed for more than "
                f"{int(max_staleness.total_seconds())} s",
            )
    return LockDecision(True)
