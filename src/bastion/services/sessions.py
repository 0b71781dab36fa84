"""The store of live-session trackers (``session_trackers/<session id>``).

Layer: services. Trackers are written by the nodes running the sessions and expire on their own
(:data:`bastion.agent.session_join.TRACKER_TTL`), like heartbeats: they are not audited changes
(the node audits ``session.start``, ``session.join``, ``session.leave`` and ``session.end``),
so the prefix is not among :func:`bastion.services.store.audited_prefixes`.
"""

from __future__ import annotations

from bastion.backend.base import Backend
from bastion.services.store import ResourceStore
from bastion.types.sessions import SessionTracker

__all__ = ["SESSION_TRACKERS_PREFIX", "tracker_store"]

SESSION_TRACKERS_PREFIX = "session_trackers"


def tracker_store(backend: Backend) -> ResourceStore[SessionTracker]:
    return ResourceStore(backend, SessionTracker, SESSION_TRACKERS_PREFIX)
