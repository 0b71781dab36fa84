"""Locks: cut any access, new or live, of a user, role, login, node, device, MFA device, access
request, bot or session.

* :mod:`.matcher` (pure): which locks match a connection's :class:`LockTargets`, and
  :func:`decide` (strict vs best-effort mode over a :class:`LockView`).
* :mod:`.watcher` (IO): :class:`LockWatcher` keeps one process's view current (backend watch in
  the auth process, the watch-fed cache on a remote node) and ends matching live connections
  through the :class:`~bastion.live.registry.LiveRegistry` within a second.

Enforcement points: the proxy's SSH route, each node's certificate check, user certificate
issuance (``bsh login``), node join and heartbeat. See docs/locks.md.
"""

from bastion.locks.matcher import (
    DEFAULT_MAX_STALENESS,
    LockDecision,
    Locked,
    LockMode,
    LockTargets,
    LockView,
    decide,
    describe_target,
    effective_mode,
    identity_targets,
    lock_matches,
    matching_locks,
)
from bastion.locks.watcher import LockWatcher, connection_targets

__all__ = [
    "DEFAULT_MAX_STALENESS",
    "LockDecision",
    "LockMode",
    "LockTargets",
    "LockView",
    "LockWatcher",
    "Locked",
    "connection_targets",
    "decide",
    "describe_target",
    "effective_mode",
    "identity_targets",
    "lock_matches",
    "matching_locks",
]
