"""Risk signals: static rules over the audit stream (docs/risk.md).

Layer: auth. :class:`RiskEngine` is pure: it is fed audit events in log order (with the roles
of the user for logins) and returns the :class:`Signal` values its rules fire; it does no IO and
reads no clock (event times are the clock). :class:`RiskEvaluator` is the small task around it:
it reads new events from the audit log every ``interval``, feeds them to the engine, and for
each signal commits a ``risk.signal`` event, together with a lock on the subject user for the
rule's ``lock_ttl`` when the rule has one (one audited transaction: never a lock without its
signal). It starts at the log's head (history is not replayed on start) and skips its own
events.

Rules (thresholds in the ``risk:`` config section, :mod:`bastion.config.risk`):

* ``failed_logins``: N failed ``user.login`` / ``sso.login`` from one source address within a
  window (alert only: a lock cannot name an address);
* ``denied_burst``: N ``access.denied`` of one user within a window;
* ``admin_new_source``: a successful login carrying an admin role from a source address this
  user had not logged in from before (the first login of a user teaches, never fires).

After a rule fires for a subject its window starts over, so one attack is one signal per window.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from bastion.audit.log import AuditLog
from bastion.auth.server import AuthServer
from bastion.config.risk import BurstRule, RiskConfig
from bastion.errors import BastionError, NotFound
from bastion.services.store import ResourceStore
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.audit import AuditEvent
from bastion.types.meta import Metadata

__all__ = ["RiskEngine", "RiskEvaluator", "Signal", "risk_lock"]

log = structlog.get_logger("bastion.risk")
LOGIN_TYPES = frozenset({"user.login", "sso.login"})
MAX_SOURCES = 64
"""Source addresses remembered per user (oldest forgotten first)."""
MAX_SUBJECTS = 100_000


@dataclass(frozen=True, slots=True)
class Signal:
    rule: str
    subject: str
    """``ip:<addr>`` or ``user:<name>``."""
    message: str
    evidence: tuple[str, ...]
    """Ids of the audit events that fired the rule."""
    time: datetime
    lock_user: str = ""
    """The user to lock (when the rule has a ``lock_ttl``)."""
    lock_ttl: timedelta | None = None


@dataclass(slots=True)
class _Window:
    rule: BurstRule
    events: dict[str, deque[tuple[datetime, str]]] = field(default_factory=dict)

    def add(self, subject: str, when: datetime, event_id: str) -> tuple[str, ...] | None:
        """The evidence when ``subject`` reaches the threshold within the window (then its
        window starts over), else None."""
        queue = self.events.get(subject)
        if queue is None:
            if len(self.events) >= MAX_SUBJECTS:
                self.events.clear()
            queue = self.events[subject] = deque()
        queue.append((when, event_id))
        while queue and when - queue[0][0] >= self.rule.window:
            queue.popleft()
        if len(queue) < self.rule.threshold:
            return None
        evidence = tuple(i for _, i in queue)
        del self.events[subject]
        return evidence


class RiskEngine:
    """The rules, fed one event at a time (pure; keeps only bounded per-subject state)."""

    def __init__(self, config: RiskConfig) -> None:
        self.config = config
        self._failed = _Window(config.failed_logins)
        self._denied = _Window(config.denied_burst)
        self._sources: dict[str, list[str]] = {}

    def feed(self, event: AuditEvent, roles: Iterable[str] = ()) -> list[Signal]:
        """The signals ``event`` fires. ``roles``: the user's roles, for a login event."""
        out: list[Signal] = []
        cfg = self.config
        when, event_id = event.time, event.id
        if event.type in LOGIN_TYPES and event.outcome == "failure" and event.remote_addr:
            rule = cfg.failed_logins
            if rule.enabled and (hit := self._failed.add(event.remote_addr, when, event_id)):
                out.append(
                    Signal(
                        "failed_logins",
                        f"ip:{event.remote_addr}",
                        f"{len(hit)} failed logins from {event.remote_addr} within {rule.window}",
                        hit,
                        when,
                    )
                )
        if event.type == "access.denied" and event.user:
            rule = cfg.denied_burst
            if rule.enabled and (hit := self._denied.add(event.user, when, event_id)):
                out.append(
                    Signal(
                        "denied_burst",
                        f"user:{event.user}",
                        f"{len(hit)} refusals of {event.user} within {rule.window}",
                        hit,
                        when,
                        lock_user=event.user if rule.lock_ttl else "",
                        lock_ttl=rule.lock_ttl,
                    )
                )
        if event.type in LOGIN_TYPES and event.outcome == "success" and event.user:
            signal = self._login_source(event, tuple(roles))
            if signal is not None:
                out.append(signal)
        return out

    def _login_source(self, event: AuditEvent, roles: tuple[str, ...]) -> Signal | None:
        rule = self.config.admin_new_source
        addr = event.remote_addr
        if not addr:
            return None
        known = self._sources.get(event.user)
        if known is None:
            if len(self._sources) >= MAX_SUBJECTS:
                self._sources.clear()
            self._sources[event.user] = [addr]
            return None  # the first login teaches
        if addr in known:
            return None
        known.append(addr)
        del known[:-MAX_SOURCES]
        admin = [r for r in roles if r in rule.admin_roles]
        if not rule.enabled or not admin:
            return None
        return Signal(
            "admin_new_source",
            f"user:{event.user}",
            f"{event.user} logged in with {', '.join(admin)} from a new address {addr}",
            (event.id,),
            event.time,
            lock_user=event.user if rule.lock_ttl else "",
            lock_ttl=rule.lock_ttl,
        )


def risk_lock(signal: Signal) -> Lock | None:
    """The lock a signal's action places (None: alert only)."""
    if not signal.lock_user or signal.lock_ttl is None:
        return None
    stamp = int(signal.time.timestamp())
    digest = hashlib.sha256(signal.subject.encode()).hexdigest()[:12]
    return Lock(
        metadata=Metadata(
            name=f"risk-{signal.rule.replace('_', '-')}-{digest}-{stamp}",
            description=signal.message,
            expires=signal.time + signal.lock_ttl,
        ),
        spec=LockSpec(
            target=LockTarget(user=signal.lock_user),
            message="access paused after suspicious activity; contact your administrator",
            created_by="risk",
            created=signal.time,
        ),
    )


class RiskEvaluator:
    """Reads the audit log from its head on, runs the engine, commits signals and locks."""

    def __init__(
        self,
        config: RiskConfig,
        audit: AuditLog,
        locks: ResourceStore[Lock],
        roles_of: Callable[[str], Awaitable[tuple[str, ...]]] | None = None,
    ) -> None:
        self.engine = RiskEngine(config)
        self.config = config
        self.audit = audit
        self.locks = locks
        self._roles_of = roles_of
        self.cursor: int | None = None
        self.fired = 0

    @classmethod
    def for_auth(cls, config: RiskConfig, auth: AuthServer) -> RiskEvaluator:
        """The evaluator of the auth process (its log, its locks, its stored users' roles)."""

        async def roles_of(name: str) -> tuple[str, ...]:
            try:
                return tuple((await auth.users.get(name)).spec.roles)
            except NotFound:
                return ()

        return cls(config, auth.audit, auth.locks, roles_of)

    async def _roles(self, event: AuditEvent) -> tuple[str, ...]:
        roles = event.fields.get("roles")
        if isinstance(roles, list):
            return tuple(str(r) for r in roles)
        if self._roles_of is None or event.type != "user.login":
            return ()
        try:
            return await self._roles_of(event.user)
        except BastionError:
            return ()

    async def step(self, limit: int = 1000) -> list[Signal]:
        """Evaluate the events appended since the last step (the first step starts at the
        head). Returns the signals committed."""
        if self.cursor is None:
            self.cursor = await self.audit.size()
            return []
        events = await self.audit.read_from(self.cursor, limit)
        fired: list[Signal] = []
        for event in events:
            self.cursor = (event.index if event.index is not None else self.cursor) + 1
            if event.type == "risk.signal" or event.user == "risk":
                continue
            for signal in self.engine.feed(event, await self._roles(event)):
                await self._commit(signal)
                fired.append(signal)
        self.fired += len(fired)
        return fired

    async def _commit(self, signal: Signal) -> None:
        lock = risk_lock(signal)
        ops = [self.locks.put_op(lock)] if lock is not None else []
        fields = {
            "rule": signal.rule,
            "subject": signal.subject,
            "evidence": list(signal.evidence),
            "action": "lock" if lock is not None else "alert",
            "lock": lock.name if lock is not None else "",
        }
        await self.audit.commit_change(
            "risk.signal", ops, outcome="failure", user="risk", target=signal.subject,
            reason=signal.message, **fields,
        )  # fmt: skip
        log.warning("risk signal", rule=signal.rule, subject=signal.subject)

    async def run_forever(self) -> None:
        interval = self.config.interval.total_seconds()
        while True:
            try:
                await self.step()
            except BastionError as exc:
                log.error("risk evaluation failed; retrying", error=exc.message)
            await asyncio.sleep(interval)
