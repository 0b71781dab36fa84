"""Continuous session checks on the node: idle timeout and certificate expiry.

Layer: agent. Access is evaluated all the time, not only when a session starts (issue 6). Two
role options end a live session on their own, without any event from outside:

* ``client_idle_timeout``: a session with neither input nor output for that long ends with
  "idle for N; disconnected".
* ``disconnect_expired_cert``: every session of a connection ends when the certificate that
  authorized it expires (``identity.expires``), with "your certificate expired; run bsh login".

The decision is the pure :func:`next_check` (a value in, a value out; the time is passed in, so
unit tests drive it with :class:`~bastion.clock.FakeClock`). :class:`ActivityTracker` is a
:class:`~bastion.agent.session.SessionObserver` on the session's
:class:`~bastion.agent.session.SessionStream` (THE place its bytes flow) that notes the last
activity. :func:`watch_session` is the one timer per session: it sleeps until the next deadline,
asks :func:`next_check` again (activity may have moved the idle deadline) and returns the
:class:`Check` that ended the session; the caller (:class:`~bastion.agent.ssh_session.NodeSession`)
then terminates and audits ``session.terminated``. This module knows nothing about SSH.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from bastion.agent.session import SessionMeta
from bastion.clock import Clock
from bastion.types.access import RoleOptions
from bastion.types.duration import format_duration
from bastion.types.identity import Identity

__all__ = [
    "CERT_EXPIRED",
    "CERT_EXPIRED_MESSAGE",
    "IDLE_TIMEOUT",
    "MAX_SLEEP",
    "ActivityTracker",
    "Check",
    "ContinuousPolicy",
    "next_check",
    "watch_session",
]

CERT_EXPIRED = "certificate expired"
"""The audited reason when ``disconnect_expired_cert`` ends a session."""
CERT_EXPIRED_MESSAGE = "your certificate expired; run bsh login"
"""What the user sees when ``disconnect_expired_cert`` ends a session."""
IDLE_TIMEOUT = "client idle timeout"
"""The audited reason when ``client_idle_timeout`` ends a session."""
MAX_SLEEP = 60.0
"""Longest single sleep of the timer, in seconds: a wall-clock jump is noticed within this."""
_MIN_SLEEP = 0.005


@dataclass(frozen=True, slots=True)
class ContinuousPolicy:
    """The continuous checks that apply to one session (from its roles and certificate)."""

    idle_timeout: timedelta | None = None
    """End the session after this long without input or output; None: never."""
    expires: datetime | None = None
    """End the session at this instant (the certificate's expiry, when the roles set
    ``disconnect_expired_cert``); None: the certificate's expiry does not end sessions."""

    @property
    def active(self) -> bool:
        """True when at least one check applies (a session without any needs no timer)."""
        return self.idle_timeout is not None or self.expires is not None

    @classmethod
    def for_session(cls, identity: Identity, options: RoleOptions) -> ContinuousPolicy:
        """The policy of a session authorized by ``identity`` under roles with ``options``.

        Args:
            identity: what the certificate asserts (its ``expires`` is the certificate expiry).
            options: the role set's aggregated options (smallest idle timeout, any
                ``disconnect_expired_cert``).

        Returns:
            The policy; a zero or negative idle timeout counts as unset.
        """
        idle = options.client_idle_timeout
        return cls(
            idle_timeout=idle if idle is not None and idle > timedelta(0) else None,
            expires=identity.expires if options.disconnect_expired_cert else None,
        )


@dataclass(frozen=True, slots=True)
class Check:
    """What :func:`next_check` decided."""

    deadline: datetime | None
    """When to look again; None: never (no check applies)."""
    reason: str | None = None
    """Set: end the session now, audited with this reason."""
    message: str = ""
    """What to tell the user when ``reason`` is set."""


def next_check(now: datetime, last_activity: datetime, policy: ContinuousPolicy) -> Check:
    """Decide whether a session must end now and, if not, when to look again.

    Args:
        now: the current time.
        last_activity: when the session last saw input or output (its start before any).
        policy: the checks that apply.

    Returns:
        A :class:`Check` with ``reason`` set when a deadline has passed (the certificate's
        expiry wins over idleness when both have), otherwise the earliest deadline to look
        again at; ``deadline`` is None when no check applies.
    """
    deadlines: list[datetime] = []
    if policy.expires is not None:
        if now >= policy.expires:
            return Check(policy.expires, CERT_EXPIRED, CERT_EXPIRED_MESSAGE)
        deadlines.append(policy.expires)
    if policy.idle_timeout is not None:
        idle_deadline = last_activity + policy.idle_timeout
        if now >= idle_deadline:
            idle = format_duration(policy.idle_timeout)
            return Check(idle_deadline, IDLE_TIMEOUT, f"idle for {idle}; disconnected")
        deadlines.append(idle_deadline)
    return Check(min(deadlines) if deadlines else None)


class ActivityTracker:
    """A session observer that notes the time of the last input or output.

    Its callbacks run in the session's data path: one clock read per chunk, nothing else.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.last_activity = clock.now()

    def touch(self) -> None:
        """Note activity now."""
        self.last_activity = self._clock.now()

    async def on_start(self, meta: SessionMeta) -> None:
        self.touch()

    def on_output(self, data: bytes) -> None:
        self.last_activity = self._clock.now()

    def on_input(self, data: bytes) -> None:
        self.last_activity = self._clock.now()

    def on_resize(self, cols: int, rows: int) -> None:
        return None  # a resize is not activity (Teleport counts data only)

    async def on_end(self, meta: SessionMeta) -> Mapping[str, object] | None:
        return None


Sleep = Callable[[float], Awaitable[None]]
"""Waits this many seconds (``asyncio.sleep``; tests pass one that advances a FakeClock)."""


async def watch_session(
    clock: Clock,
    policy: ContinuousPolicy,
    tracker: ActivityTracker,
    *,
    sleep: Sleep = asyncio.sleep,
) -> Check | None:
    """The session's one timer: wait until a check ends the session.

    Args:
        clock: the node's clock (the same one ``tracker`` reads).
        policy: the checks that apply.
        tracker: where the session's last activity is noted.
        sleep: how to wait.

    Returns:
        The :class:`Check` whose ``reason`` says why the session must end now, or None at once
        when no check applies. Cancel the task to stop watching (the session ended first).
    """
    while True:
        now = clock.now()
        check = next_check(now, tracker.last_activity, policy)
        if check.reason is not None:
            return check
        if check.deadline is None:
            return None
        delay = (check.deadline - now).total_seconds()
        await sleep(min(max(delay, _MIN_SLEEP), MAX_SLEEP))
