"""The risk rules: pure functions over the ordered audit stream, with bounded per-subject state.

Layer: auth (pure: no IO, no clock; event times are the clock). :class:`RiskEngine` holds one
:class:`Rule` per configured rule (:class:`bastion.types.risk.RiskRuleSpec`) and feeds each
audit event to each of them in log order; a rule returns the :class:`Signal` it fires. The
evaluator (:mod:`bastion.auth.risk`) commits signals; ``bctl risk test`` replays history through
a fresh engine and commits nothing. docs/risk.md describes every rule type.

After a rule fires for a subject its window starts over, so one burst is one signal.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from bastion.types.audit import AuditEvent
from bastion.types.risk import RiskRuleSpec

__all__ = [
    "ADMIN_ACTIONS",
    "LOGIN_TYPES",
    "RiskEngine",
    "Rule",
    "Signal",
    "make_rule",
    "network_of",
]

LOGIN_TYPES = frozenset({"user.login", "sso.login"})
ADMIN_ACTIONS = frozenset(
    {
        "user.create", "user.update", "user.delete", "user.reset", "user.invite",
        "role.create", "role.update", "role.delete", "token.create", "token.delete",
        "lock.delete", "resource.create", "resource.update", "resource.delete",
        "connector.create", "connector.update", "connector.delete", "ca.rotate",
        "scim.token.create", "access_request.review", "mfa.admin",
    }
)  # fmt: skip
"""Event types that are an administrator's change (what ``admin_new_source`` watches)."""
OWN_EVENTS = frozenset({"risk.signal", "risk.step_up"})
MAX_SOURCES = 64
"""Networks and devices remembered per user (oldest forgotten first)."""
MAX_SUBJECTS = 100_000
"""Subjects (users, addresses, serials) a rule keeps state for; beyond, it starts over."""


@dataclass(frozen=True, slots=True)
class Signal:
    rule: str
    """The rule's name (``failed_logins``, or a ``risk_rule`` resource's name)."""
    rule_type: str
    subject: str
    """``ip:<addr>``, ``user:<name>`` or ``cert:<serial>``."""
    message: str
    evidence: tuple[str, ...]
    """Ids of the audit events that fired the rule."""
    time: datetime
    action: str = "alert"
    """``alert``, ``step_up`` or ``lock``."""
    user: str = ""
    """The user the action applies to (empty: alert only)."""
    ttl: timedelta | None = None


@functools.lru_cache(maxsize=65_536)
def network_of(addr: str) -> str:
    """The source network of an address: /24 for IPv4, /48 for IPv6 (the address itself when
    it does not parse). Cached: a log repeats its addresses."""
    parts = addr.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        return f"{int(parts[0])}.{int(parts[1])}.{int(parts[2])}.0/24"  # the common case, fast
    host = addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr  # v4 with a port
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _bounded(table: dict[str, object], subject: str) -> None:
    if subject not in table and len(table) >= MAX_SUBJECTS:
        table.clear()


class Rule:
    """One configured rule and its state."""

    TYPES: frozenset[str] | None = None
    """The event types the rule looks at (None: every event)."""

    def __init__(self, name: str, spec: RiskRuleSpec) -> None:
        self.name = name
        self.spec = spec.resolved()
        self.fired = 0

    def watches(self, user: str) -> bool:
        return not self.spec.users or any(fnmatchcase(user, p) for p in self.spec.users)

    def feed(self, event: AuditEvent) -> Signal | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def signal(self, user: str, subject: str, message: str, evidence: Iterable[str],
               when: datetime) -> Signal:  # fmt: skip
        spec = self.spec
        acts = spec.action != "alert" and bool(user)
        self.fired += 1
        return Signal(
            rule=self.name, rule_type=spec.type, subject=subject, message=message,
            evidence=tuple(evidence), time=when, action=spec.action if acts else "alert",
            user=user if acts else "", ttl=spec.lock_ttl if acts else None,
        )  # fmt: skip


def _login(event: AuditEvent) -> bool:
    return event.type in LOGIN_TYPES and event.outcome == "success" and bool(event.user)


class _Burst(Rule):
    """N events of one subject within a window (reset on fire)."""

    def __init__(self, name: str, spec: RiskRuleSpec) -> None:
        super().__init__(name, spec)
        self.events: dict[str, deque[tuple[datetime, str]]] = {}

    def add(self, subject: str, when: datetime, event_id: str) -> tuple[str, ...] | None:
        queue = self.events.get(subject)
        if queue is None:
            _bounded(self.events, subject)  # type: ignore[arg-type]
            queue = self.events[subject] = deque()
        queue.append((when, event_id))
        while queue and when - queue[0][0] >= self.spec.window:
            queue.popleft()
        if len(queue) < self.spec.threshold:
            return None
        del self.events[subject]
        return tuple(i for _, i in queue)


class FailedLogins(_Burst):
    TYPES = LOGIN_TYPES

    def feed(self, event: AuditEvent) -> Signal | None:
        if event.type not in LOGIN_TYPES or event.outcome != "failure" or not event.remote_addr:
            return None
        hit = self.add(event.remote_addr, event.time, event.id)
        if hit is None:
            return None
        return self.signal("", f"ip:{event.remote_addr}", f"{len(hit)} failed logins from "
                           f"{event.remote_addr} within {self.spec.window}", hit,
                           event.time)  # fmt: skip


class DeniedBurst(_Burst):
    TYPES = frozenset({"access.denied"})

    def feed(self, event: AuditEvent) -> Signal | None:
        if event.type != "access.denied" or not event.user or not self.watches(event.user):
            return None
        hit = self.add(event.user, event.time, event.id)
        if hit is None:
            return None
        return self.signal(event.user, f"user:{event.user}", f"{len(hit)} refusals of "
                           f"{event.user} within {self.spec.window}", hit,
                           event.time)  # fmt: skip


@dataclass(slots=True)
class _Known:
    logins: int = 0
    networks: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)

    def novelty(self, event: AuditEvent) -> str:
        """What is new about this login ("" when nothing), then remember it."""
        new: list[str] = []
        network = network_of(event.remote_addr) if event.remote_addr else ""
        if network and network not in self.networks:
            new.append(f"network {network}")
            self.networks.append(network)
            del self.networks[:-MAX_SOURCES]
        if event.device_id and event.device_id not in self.devices:
            new.append(f"device {event.device_id}")
            self.devices.append(event.device_id)
            del self.devices[:-MAX_SOURCES]
        self.logins += 1
        return " and ".join(new)


class NewSource(Rule):
    TYPES = LOGIN_TYPES

    def __init__(self, name: str, spec: RiskRuleSpec) -> None:
        super().__init__(name, spec)
        self.known: dict[str, _Known] = {}

    def feed(self, event: AuditEvent) -> Signal | None:
        if not _login(event) or not self.watches(event.user):
            return None
        known = self.known.get(event.user)
        if known is None:
            _bounded(self.known, event.user)  # type: ignore[arg-type]
            known = self.known[event.user] = _Known()
        history = known.logins
        new = known.novelty(event)
        if not new or history < self.spec.min_history:
            return None
        return self.signal(event.user, f"user:{event.user}",
                           f"{event.user} logged in from a new {new}", (event.id,),
                           event.time)  # fmt: skip


class UnusualHour(Rule):
    TYPES = LOGIN_TYPES

    def __init__(self, name: str, spec: RiskRuleSpec) -> None:
        super().__init__(name, spec)
        self.hours: dict[str, list[int]] = {}

    def feed(self, event: AuditEvent) -> Signal | None:
        if not _login(event) or not self.watches(event.user):
            return None
        hist = self.hours.get(event.user)
        if hist is None:
            _bounded(self.hours, event.user)  # type: ignore[arg-type]
            hist = self.hours[event.user] = [0] * 24
        hour = event.time.hour
        total = sum(hist)
        near = hist[(hour - 1) % 24] + hist[hour] + hist[(hour + 1) % 24]
        hist[hour] += 1
        if total < self.spec.min_history or near >= self.spec.rare_share * total:
            return None
        return self.signal(event.user, f"user:{event.user}",
                           f"{event.user} logged in at {hour:02d}h UTC, {near} of "
                           f"{total} earlier logins within an hour of it", (event.id,),
                           event.time)  # fmt: skip


class ConcurrentNetworks(Rule):
    def __init__(self, name: str, spec: RiskRuleSpec) -> None:
        super().__init__(name, spec)
        self.seen: dict[str, dict[str, tuple[datetime, str]]] = {}

    def feed(self, event: AuditEvent) -> Signal | None:
        serial = event.fields.get("cert_serial")
        if not serial or not event.remote_addr or not self.watches(event.user):
            return None
        key = str(serial)
        network = network_of(event.remote_addr)
        nets = self.seen.get(key)
        if nets is None:
            _bounded(self.seen, key)  # type: ignore[arg-type]
            nets = self.seen[key] = {}
        window = self.spec.window
        for net in [n for n, (t, _) in nets.items() if event.time - t >= window]:
            del nets[net]
        others = [(n, i) for n, (_, i) in nets.items() if n != network]
        nets[network] = (event.time, event.id)
        if not others:
            return None
        del self.seen[key]
        where = ", ".join(sorted({n for n, _ in others} | {network}))
        return self.signal(event.user, f"cert:{key}",
                           f"certificate {key} of {event.user} used from {where} within "
                           f"{window}", [i for _, i in others] + [event.id],
                           event.time)  # fmt: skip


class AdminNewSource(Rule):
    TYPES = LOGIN_TYPES | ADMIN_ACTIONS

    def __init__(self, name: str, spec: RiskRuleSpec) -> None:
        super().__init__(name, spec)
        self.known: dict[str, _Known] = {}
        self.pending: dict[str, tuple[datetime, str, str]] = {}

    def feed(self, event: AuditEvent) -> Signal | None:
        if not event.user or not self.watches(event.user):
            return None
        if _login(event):
            known = self.known.get(event.user)
            if known is None:
                _bounded(self.known, event.user)  # type: ignore[arg-type]
                known = self.known[event.user] = _Known()
            history = known.logins
            new = known.novelty(event)
            if new and history >= max(1, self.spec.min_history):
                _bounded(self.pending, event.user)  # type: ignore[arg-type]
                self.pending[event.user] = (event.time, event.id, new)
            return None
        if event.type not in ADMIN_ACTIONS or event.outcome != "success":
            return None
        pending = self.pending.get(event.user)
        if pending is None:
            return None
        since, login_id, new = pending
        if event.time - since >= self.spec.window:
            del self.pending[event.user]
            return None
        del self.pending[event.user]
        return self.signal(event.user, f"user:{event.user}",
                           f"{event.user} made an admin change ({event.type}) "
                           f"{int((event.time - since).total_seconds())}s after a login from "
                           f"a new {new}", (login_id, event.id), event.time)  # fmt: skip


class LateralMovement(Rule):
    TYPES = frozenset({"session.start"})

    def __init__(self, name: str, spec: RiskRuleSpec) -> None:
        super().__init__(name, spec)
        self.sessions: dict[str, deque[tuple[datetime, str, str]]] = {}

    def feed(self, event: AuditEvent) -> Signal | None:
        if event.type != "session.start" or not event.user or not event.target:
            return None
        if not self.watches(event.user):
            return None
        queue = self.sessions.get(event.user)
        if queue is None:
            _bounded(self.sessions, event.user)  # type: ignore[arg-type]
            queue = self.sessions[event.user] = deque()
        queue.append((event.time, event.target, event.id))
        while queue and event.time - queue[0][0] >= self.spec.window:
            queue.popleft()
        first: dict[str, str] = {}
        for _, node, event_id in queue:
            first.setdefault(node, event_id)
        if len(first) < self.spec.threshold:
            if len(queue) > 4 * self.spec.threshold:  # many sessions to few nodes: compact
                kept = {n: (t, i) for t, n, i in queue}
                queue.clear()
                queue.extend(sorted((t, n, i) for n, (t, i) in kept.items()))
            return None
        del self.sessions[event.user]
        return self.signal(event.user, f"user:{event.user}",
                           f"{event.user} opened sessions to {len(first)} nodes within "
                           f"{self.spec.window}", first.values(), event.time)  # fmt: skip


_TYPES: dict[str, type[Rule]] = {
    "failed_logins": FailedLogins,
    "denied_burst": DeniedBurst,
    "new_source": NewSource,
    "unusual_hour": UnusualHour,
    "concurrent_networks": ConcurrentNetworks,
    "admin_new_source": AdminNewSource,
    "lateral_movement": LateralMovement,
}


def make_rule(name: str, spec: RiskRuleSpec) -> Rule:
    return _TYPES[spec.type](name, spec)


class RiskEngine:
    """The enabled rules, fed one event at a time in log order."""

    def __init__(self, rules: Mapping[str, RiskRuleSpec]) -> None:
        self.rules: dict[str, Rule] = {
            name: make_rule(name, spec) for name, spec in rules.items() if spec.enabled
        }
        self._specs = dict(rules)
        self._by_type: dict[str, list[Rule]] = {}

    def reconfigure(self, rules: Mapping[str, RiskRuleSpec]) -> None:
        """Apply a new rule set: unchanged rules keep their state, changed ones start over."""
        kept: dict[str, Rule] = {}
        for name, spec in rules.items():
            if not spec.enabled:
                continue
            old = self.rules.get(name)
            kept[name] = (
                old if old is not None and self._specs.get(name) == spec else make_rule(name, spec)
            )
        self.rules, self._specs = kept, dict(rules)
        self._by_type = {}

    def feed(self, event: AuditEvent) -> list[Signal]:
        """The signals ``event`` fires (risk's own events are never evidence)."""
        if event.type in OWN_EVENTS or event.user == "risk":
            return []
        rules = self._by_type.get(event.type)
        if rules is None:
            rules = self._by_type[event.type] = [
                r for r in self.rules.values() if r.TYPES is None or event.type in r.TYPES
            ]
        out = []
        for rule in rules:
            signal = rule.feed(event)
            if signal is not None:
                out.append(signal)
        return out
