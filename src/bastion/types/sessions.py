"""Moderated sessions and session join: the role fields and the live-session tracker resource.

Layer: types (pure). Two role fields (docs/moderated-sessions.md):

* ``options.require_session_join: [{name, filter, kinds, modes, count, on_leave}]`` on the
  roles of the people whose sessions must be watched: a session of theirs waits until, for
  every such role, one of its policies has ``count`` participants whose mode is in ``modes`` and
  who match ``filter``; when that stops holding, the session pauses or terminates
  (``on_leave``).
* ``allow.join_sessions: [{name, roles, kinds, modes}]`` (and ``deny``) on the roles of the
  people who may join: sessions of users holding one of ``roles``, in one of ``modes``.

``filter`` is a CEL expression over the joining ``user`` (``name``, ``roles``, ``traits``),
e.g. ``contains(user.roles, "sre")`` is written ``"sre" in user.roles``; checked when the role is
written. The decisions are pure functions in :mod:`bastion.rbac.moderation`.

:class:`SessionTracker` is what a node reports to auth about one live session (so ``bsh
sessions ls`` can list it); it expires unless the node refreshes it.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from bastion.types.meta import Resource, StrictModel

__all__ = [
    "JOIN_MODES",
    "JoinMode",
    "JoinSessionsRule",
    "ParticipantMode",
    "SessionKind",
    "SessionParticipant",
    "SessionRequirePolicy",
    "SessionState",
    "SessionTracker",
    "SessionTrackerSpec",
    "compile_session_filter",
]

JoinMode = Literal["observer", "moderator", "peer"]
"""``observer`` sees the output; ``peer`` also types; ``moderator`` sees, may terminate, and
counts toward ``require_session_join`` policies that list it."""
JOIN_MODES: tuple[JoinMode, ...] = ("observer", "moderator", "peer")
ParticipantMode = Literal["owner", "observer", "moderator", "peer"]
SessionKind = Literal["ssh", "db"]
"""Kinds of sessions policies name; only ``ssh`` sessions are joinable today."""
SessionState = Literal["pending", "running", "paused"]


def _ssh() -> list[SessionKind]:
    return ["ssh"]


def _moderator() -> list[JoinMode]:
    return ["moderator"]


def _observer() -> list[JoinMode]:
    return ["observer"]


_FILTER_VARS = {"user": ("name", "roles", "traits")}
_IDENT = re.compile(r"(?<![\w.\"'])([A-Za-z_]\w*)(\s*\.\s*([A-Za-z_]\w*))?")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_ALLOWED_BARE = {"true", "false", "null", "in", "size", "has", "contains", "exists", "all"}


@lru_cache(maxsize=512)
def compile_session_filter(text: str) -> Any:
    """Check and compile a policy ``filter`` once (cached by text).

    Raises:
        ValueError: too long, malformed, an unknown variable or field, or not a boolean.
    """
    if len(text) > 1000:
        raise ValueError("filter is longer than 1000 characters")
    try:
        import cel  # on first use: the package imports its CLI (~0.2 s)

        program = cel.compile(text)
    except Exception as exc:  # noqa: BLE001 - the engine raises ValueError or RuntimeError
        raise ValueError(f"syntax error: {str(exc).strip().splitlines()[0][:200]}") from None
    code = _STRING.sub('""', text)
    for match in _IDENT.finditer(code):
        name, field = match.group(1), match.group(3)
        if name in _FILTER_VARS:
            if field and field not in _FILTER_VARS[name]:
                raise ValueError(f"unknown field user.{field}: user has name, roles, traits")
        elif name not in _ALLOWED_BARE and not code[match.end() :].lstrip().startswith("("):
            raise ValueError(f"unknown variable {name!r}: a filter reads user")
    try:
        result = program.execute({"user": {"name": "probe", "roles": ["probe"], "traits": {}}})
    except Exception as exc:  # noqa: BLE001 - type errors and friends
        if "key" not in str(exc).lower():
            raise ValueError(f"invalid filter: {str(exc).splitlines()[0][:200]}") from None
        result = False
    if not isinstance(result, bool):
        raise ValueError("a filter must be true or false")
    return program


class SessionRequirePolicy(StrictModel):
    """One ``require_session_join`` entry: who must be present for a session to run."""

    name: str = ""
    filter: str = ""
    """CEL over the participant ``user``; empty: every participant in a listed mode counts."""
    kinds: list[SessionKind] = Field(default_factory=_ssh)
    modes: list[JoinMode] = Field(default_factory=_moderator)
    count: int = Field(default=1, ge=1, le=100)
    on_leave: Literal["terminate", "pause"] = "terminate"
    """What happens to a running session when this policy stops being met (the last moderator
    left): ``terminate`` ends it, ``pause`` blocks input until enough participants are back."""

    @field_validator("filter")
    @classmethod
    def _check_filter(cls, value: str) -> str:
        if value:
            compile_session_filter(value)
        return value

    @field_validator("kinds", "modes")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one")
        return value


class JoinSessionsRule(StrictModel):
    """One ``join_sessions`` entry: whose sessions the holder may join, and how."""

    name: str = ""
    roles: list[str] = Field(default_factory=list)
    """The session owner must hold one of these roles (``*``: any)."""
    kinds: list[SessionKind] = Field(default_factory=_ssh)
    modes: list[JoinMode] = Field(default_factory=_observer)

    @field_validator("roles", "kinds", "modes")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one")
        return value


class SessionParticipant(StrictModel):
    user: str
    mode: ParticipantMode
    joined: datetime | None = None


class SessionTrackerSpec(StrictModel):
    kind: SessionKind = "ssh"
    node: str
    host_id: str = ""
    owner: str
    """The Bastion user who started the session."""
    owner_roles: list[str] = Field(default_factory=list)
    login: str = ""
    command: str = ""
    state: SessionState = "running"
    participants: list[SessionParticipant] = Field(default_factory=list)
    waiting_for: list[str] = Field(default_factory=list)
    """While pending or paused: who still has to join, one line per unmet role."""
    started: datetime | None = None


class SessionTracker(Resource):
    """A live session as its node reports it (named by the session id)."""

    KIND: ClassVar[str] = "session_tracker"
    kind: str = "session_tracker"
    spec: SessionTrackerSpec
