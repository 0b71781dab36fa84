"""Live sessions (session join, moderated sessions): nodes report them, users list them.

``PUT``/``DELETE /v1/sessions/{session_id}`` come from the node running the session (a host
writes only its own sessions); ``GET /v1/sessions`` lists the live sessions the caller may see:
their own and those they may join (:mod:`bastion.rbac.moderation`); ``GET
/v1/sessions/{session_id}`` is one of them (a session the caller may not see is not found).
Joining itself goes through the proxy's SSH route (docs/moderated-sessions.md).
"""

from __future__ import annotations

from datetime import datetime

from bastion.contract.base import Body, Empty, Endpoint, Reply
from bastion.types.sessions import SessionTracker

__all__ = [
    "FORGET_SESSION",
    "GET_SESSION",
    "LIST_SESSIONS",
    "REPORT_SESSION",
    "ParticipantInfo",
    "SessionInfo",
    "SessionList",
    "TrackerBody",
]


class TrackerBody(Body):
    tracker: SessionTracker


class ParticipantInfo(Reply):
    user: str
    mode: str
    joined: datetime | None = None


class SessionInfo(Reply):
    id: str
    kind: str = "ssh"
    node: str
    host_id: str = ""
    owner: str
    login: str = ""
    command: str = ""
    state: str = "running"
    participants: list[ParticipantInfo] = []
    waiting_for: list[str] = []
    started: datetime | None = None
    join_modes: list[str] = []
    """The modes in which the caller may join (empty for their own session)."""


class SessionList(Reply):
    items: list[SessionInfo]


REPORT_SESSION = Endpoint(
    "PUT",
    "/v1/sessions/{session_id}",
    "host",
    "A node reports one of its live sessions (refreshed while it lives)",
    body=TrackerBody,
    response=Empty,
)
FORGET_SESSION = Endpoint(
    "DELETE",
    "/v1/sessions/{session_id}",
    "host",
    "A node reports that one of its sessions ended",
    body=Empty,
    response=Empty,
)
LIST_SESSIONS = Endpoint(
    "GET",
    "/v1/sessions",
    "user",
    "Live sessions you may see: yours and those you may join",
    body=Empty,
    response=SessionList,
)
GET_SESSION = Endpoint(
    "GET",
    "/v1/sessions/{session_id}",
    "user",
    "One live session you may see",
    body=Empty,
    response=SessionInfo,
)
