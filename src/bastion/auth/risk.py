"""Risk signals: the evaluator that runs the rules over the audit log (docs/risk.md).

Layer: auth. The rules themselves are pure (:mod:`bastion.auth.risk_rules`). Which rules run:
one built-in rule of each type (thresholds from the ``risk:`` config section for the three
that have one there), replaced by a stored ``risk_rule`` resource of the same name, plus every
other stored rule (:func:`rule_set`).

:class:`RiskEvaluator` reads the audit log from its **persisted cursor** (``risk/cursor``, the
index of the next event to evaluate) every ``interval``. Each signal is committed in one
audited transaction: the ``risk.signal`` event, the action (a lock on the user for
``lock_ttl``, or the step-up flag of :mod:`bastion.auth.step_up`), the rule's last-fired record
(``risk/fired/<rule>``) and the cursor just past the evidence. After a batch the cursor is
stored once more. So a restart resumes exactly where evaluation stopped: no event is skipped
and none that already fired is fired again. On its very first start the evaluator begins at
the log's head (history is learnt, not alerted on). On every start the rules learn from up to
``WARMUP`` events before the cursor (signals discarded): per-user histories (sources, hours)
survive restarts without being stored.

Several auth servers (HA) each run an evaluator over the one log; the cursor is their arbiter:
every cursor write is conditional on the revision the evaluator last read or wrote, so a signal
commits only from the evaluator whose cursor is current. The other one's transaction fails
whole (no duplicate signal, lock or event); it re-reads the cursor and carries on from there.

:func:`replay` is ``bctl risk test``: the same rules over a span of the log, committing nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import structlog

from bastion.audit.log import AuditLog
from bastion.auth.risk_rules import RiskEngine, Signal
from bastion.auth.server import AuthServer
from bastion.auth.step_up import step_up_put
from bastion.backend.base import Backend, Create, Item, Op, Put, Update
from bastion.config.risk import RiskConfig
from bastion.errors import AlreadyExists, BastionError, CompareFailed, NotFound
from bastion.services.store import ResourceStore
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.meta import Metadata
from bastion.types.risk import RULE_TYPES, RiskRule, RiskRuleSpec

__all__ = [
    "CURSOR_KEY",
    "FIRED_PREFIX",
    "RiskEngine",
    "RiskEvaluator",
    "RuleStatus",
    "Signal",
    "builtin_rules",
    "replay",
    "risk_lock",
    "rule_set",
    "rule_status",
]

log = structlog.get_logger("bastion.risk")
CURSOR_KEY = "risk/cursor"
FIRED_PREFIX = "risk/fired/"
WARMUP = 100_000
"""Events before the cursor the rules learn from at start (signals discarded)."""
BATCH = 2000


def builtin_rules(config: RiskConfig) -> dict[str, RiskRuleSpec]:
    """One rule of each type, named after it; the ``risk:`` config section tunes three."""
    rules = {name: RiskRuleSpec.model_validate({"type": name}) for name in RULE_TYPES}
    for name in ("failed_logins", "denied_burst"):
        burst = getattr(config, name)
        rules[name] = RiskRuleSpec(
            type=name,
            enabled=burst.enabled,
            threshold=burst.threshold,
            window=burst.window,
            action="lock" if burst.lock_ttl and name != "failed_logins" else "alert",
            **({"lock_ttl": burst.lock_ttl} if burst.lock_ttl else {}),
        )
    admin = config.admin_new_source
    rules["admin_new_source"] = RiskRuleSpec(
        type="admin_new_source",
        enabled=admin.enabled,
        admin_roles=admin.admin_roles,
        action="lock" if admin.lock_ttl else "alert",
        **({"lock_ttl": admin.lock_ttl} if admin.lock_ttl else {}),
    )
    return rules


async def rule_set(config: RiskConfig, store: ResourceStore[RiskRule]) -> dict[str, RiskRuleSpec]:
    """The rules in force: the built-ins, replaced or joined by stored ``risk_rule``s."""
    rules = builtin_rules(config)
    for stored in await store.list():
        rules[stored.name] = stored.spec
    return rules


def risk_lock(signal: Signal) -> Lock | None:
    """The lock a ``lock`` signal places (None for other actions)."""
    if signal.action != "lock" or not signal.user or signal.ttl is None:
        return None
    stamp = int(signal.time.timestamp())
    digest = hashlib.sha256(signal.subject.encode()).hexdigest()[:12]
    return Lock(
        metadata=Metadata(
            name=f"risk-{signal.rule.replace('_', '-')}-{digest}-{stamp}",
            description=signal.message,
            expires=signal.time + signal.ttl,
        ),
        spec=LockSpec(
            target=LockTarget(user=signal.user),
            message="access paused after suspicious activity; contact your administrator",
            created_by="risk",
            created=signal.time,
        ),
    )


async def load_cursor(backend: Backend) -> int | None:
    return (await _read_cursor(backend))[0]


async def _read_cursor(backend: Backend) -> tuple[int | None, int | None]:
    """The stored cursor and its revision (None, None: none stored)."""
    try:
        item = await backend.get(CURSOR_KEY)
    except NotFound:
        return None, None
    try:
        value = json.loads(item.value)["next_index"]
    except (ValueError, KeyError, TypeError):
        log.error("risk cursor unreadable; starting at the head")
        return None, item.revision
    return (int(value) if isinstance(value, int) and value >= 0 else None), item.revision


def _cursor_item(next_index: int) -> Item:
    return Item(CURSOR_KEY, json.dumps({"next_index": next_index}).encode())


async def index_at(audit: AuditLog, when: datetime) -> int:
    """The index of the first event at or after ``when`` (binary search: the log is in time
    order up to clock skew between writers)."""
    lo, hi = 0, await audit.size()
    while lo < hi:
        mid = (lo + hi) // 2
        events = await audit.read_from(mid, 1)
        if not events or events[0].time >= when:
            hi = mid
        else:
            lo = mid + 1
    return lo


async def _learn(engine: RiskEngine, audit: AuditLog, start: int, end: int) -> None:
    index = start
    while index < end:
        events = await audit.read_from(index, min(BATCH, end - index))
        if not events:
            return
        for event in events:
            engine.feed(event)
        index = (events[-1].index if events[-1].index is not None else index) + 1


async def replay(
    rules: Mapping[str, RiskRuleSpec], audit: AuditLog, since: datetime, learn: int = WARMUP
) -> tuple[list[Signal], int]:
    """What the rules would fire over the events since ``since`` (after learning from up to
    ``learn`` events before it). Commits nothing. Returns the signals and the events read."""
    engine = RiskEngine(rules)
    start = await index_at(audit, since)
    await _learn(engine, audit, max(0, start - learn), start)
    index, read = start, 0
    out: list[Signal] = []
    while True:
        events = await audit.read_from(index, BATCH)
        if not events:
            return out, read
        for event in events:
            if event.type != "risk.signal":
                out += engine.feed(event)
        read += len(events)
        index = (events[-1].index if events[-1].index is not None else index) + 1


@dataclass(frozen=True, slots=True)
class RuleStatus:
    name: str
    spec: RiskRuleSpec
    builtin: bool
    last_fired: str
    last_subject: str


async def rule_status(
    config: RiskConfig, store: ResourceStore[RiskRule], backend: Backend
) -> tuple[list[RuleStatus], int | None]:
    """Every rule in force with when it last fired, and the evaluator's cursor."""
    rules = await rule_set(config, store)
    builtin = builtin_rules(config)
    fired: dict[str, dict[str, str]] = {}
    for item in await backend.get_range(FIRED_PREFIX):
        try:
            fired[item.key[len(FIRED_PREFIX) :]] = json.loads(item.value)
        except ValueError:
            continue
    out = [
        RuleStatus(
            name=name,
            spec=spec.resolved(),
            builtin=name in builtin and builtin[name] == spec,
            last_fired=fired.get(name, {}).get("time", ""),
            last_subject=fired.get(name, {}).get("subject", ""),
        )
        for name, spec in sorted(rules.items())
    ]
    return out, await load_cursor(backend)


class RiskEvaluator:
    """Reads the audit log from its persisted cursor, runs the rules, commits signals."""

    def __init__(
        self, config: RiskConfig, audit: AuditLog, locks: ResourceStore[Lock],
        rules: ResourceStore[RiskRule] | None = None, warmup: int = WARMUP,
    ) -> None:  # fmt: skip
        self.config = config
        self.audit = audit
        self.locks = locks
        self.rules = rules
        self.engine = RiskEngine(builtin_rules(config))
        self.warmup = warmup
        self.cursor: int | None = None
        self._revision: int | None = None
        self.fired = 0

    @classmethod
    def for_auth(cls, config: RiskConfig, auth: AuthServer) -> RiskEvaluator:
        """The evaluator of the auth process (its log, its locks, its stored rules)."""
        return cls(config, auth.audit, auth.locks, auth.store("risk_rule"))

    async def _start(self) -> int:
        cursor = await self._sync_cursor()
        await _learn(self.engine, self.audit, max(0, cursor - self.warmup), cursor)
        return cursor

    async def _sync_cursor(self) -> int:
        """Adopt the stored cursor (creating it at the log's head the first time)."""
        backend = self.audit.backend
        cursor, self._revision = await _read_cursor(backend)
        if cursor is None:
            cursor = await self.audit.size()
            op: Op = (
                Create(_cursor_item(cursor))
                if self._revision is None
                else Update(_cursor_item(cursor), self._revision)
            )
            try:
                (written,) = await backend.commit([op])
            except (AlreadyExists, CompareFailed):  # another evaluator started it first
                return await self._sync_cursor()
            assert written is not None
            self._revision = written.revision
        return cursor

    def _cursor_op(self, next_index: int) -> Update:
        """The cursor write: only over the revision this evaluator knows (see the module)."""
        return Update(_cursor_item(next_index), self._revision)

    async def step(self, limit: int = BATCH) -> list[Signal]:
        """Evaluate the events appended since the cursor. Returns the signals committed."""
        if self.rules is not None:
            self.engine.reconfigure(await rule_set(self.config, self.rules))
        if self.cursor is None:
            self.cursor = await self._start()
        start = self.cursor
        events = await self.audit.read_from(start, limit)
        fired: list[Signal] = []
        try:
            for event in events:
                next_index = (event.index if event.index is not None else self.cursor) + 1
                for signal in self.engine.feed(event):
                    await self._commit(signal, next_index)
                    fired.append(signal)
                self.cursor = next_index
            if self.cursor != start:
                (written,) = await self.audit.backend.commit([self._cursor_op(self.cursor)])
                assert written is not None
                self._revision = written.revision
        except (CompareFailed, NotFound):
            # Another evaluator moved the cursor: its signals stand, ours are not committed.
            self.cursor = await self._sync_cursor()
        self.fired += len(fired)
        return fired

    async def _commit(self, signal: Signal, next_index: int) -> None:
        lock = risk_lock(signal)
        ops: list[Op] = [self._cursor_op(next_index)]
        if lock is not None:
            ops.append(self.locks.put_op(lock))
        if signal.action == "step_up" and signal.user and signal.ttl is not None:
            ops.append(step_up_put(signal.user, signal.rule, signal.time,
                                   signal.time + signal.ttl))  # fmt: skip
        last = {"time": signal.time.isoformat(), "subject": signal.subject}
        ops.append(Put(Item(FIRED_PREFIX + signal.rule, json.dumps(last).encode())))
        fields = {
            "rule": signal.rule,
            "rule_type": signal.rule_type,
            "subject": signal.subject,
            "evidence": list(signal.evidence),
            "action": signal.action,
            "lock": lock.name if lock is not None else "",
        }
        change = await self.audit.commit_change(
            "risk.signal", ops, outcome="failure", user="risk", target=signal.subject,
            reason=signal.message, **fields,
        )  # fmt: skip
        cursor = change.items[0]
        assert cursor is not None
        self._revision = cursor.revision
        log.warning("risk signal", rule=signal.rule, subject=signal.subject, action=signal.action)

    async def run_forever(self) -> None:
        interval = self.config.interval.total_seconds()
        while True:
            try:
                await self.step()
            except BastionError as exc:
                log.error("risk evaluation failed; retrying", error=exc.message)
            await asyncio.sleep(interval)
