"""Risk rules over the audit stream: each fires on a crafted history, none on a benign one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.auth.risk import RiskEngine, RiskEvaluator
from bastion.config.risk import BurstRule, RiskConfig
from bastion.locks.matcher import LockTargets
from bastion.testing import make_auth
from bastion.types.audit import AuditEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
CONFIG = RiskConfig(
    failed_logins=BurstRule(threshold=5, window=WINDOW),
    denied_burst=BurstRule(threshold=5, window=WINDOW),
)


def _event(kind: str, seconds: float, user: str = "alice", ip: str = "10.0.0.1",
           outcome: str = "success", **fields: object) -> AuditEvent:  # fmt: skip
    return AuditEvent(
        type=kind, time=T0 + timedelta(seconds=seconds), user=user, remote_addr=ip,
        outcome=outcome, id=f"e{seconds}", fields=dict(fields),
    )  # fmt: skip


def _run(events: list[AuditEvent], roles: tuple[str, ...] = ()) -> list[str]:
    engine = RiskEngine(CONFIG)
    return [s.rule for e in events for s in engine.feed(e, roles)]


def _oracle_fires(times: list[float], threshold: int, window: float) -> int:
    """How many times a reset-on-fire sliding window fires (the rule's definition)."""
    fired, current = 0, []
    for t in times:
        current = [c for c in current if t - c < window] + [t]
        if len(current) >= threshold:
            fired, current = fired + 1, []
    return fired


@given(st.lists(st.floats(0, 3600, allow_nan=False), max_size=40))
def test_failed_logins_fire_exactly_as_the_window_definition(raw: list[float]) -> None:
    times = sorted(raw)
    events = [_event("user.login", t, outcome="failure") for t in times]
    fired = _run(events).count("failed_logins")
    assert fired == _oracle_fires(times, 5, WINDOW.total_seconds())


@given(st.lists(st.tuples(st.sampled_from(["alice", "bob", "carol"]),
                          st.floats(0, 36000, allow_nan=False)), max_size=60))  # fmt: skip
@settings(max_examples=200)
def test_a_benign_history_fires_nothing(raw: list[tuple[str, float]]) -> None:
    """Users log in from their own address, fail now and then (at most once in a window),
    and are refused rarely: no rule fires."""
    events: list[AuditEvent] = []
    last_failure: dict[str, float] = {}
    for user, t in sorted(raw, key=lambda p: p[1]):
        ip = f"10.0.0.{['alice', 'bob', 'carol'].index(user) + 1}"
        events.append(_event("user.login", t, user=user, ip=ip, roles=["editor"]))
        if t - last_failure.get(user, -1e9) > WINDOW.total_seconds():
            last_failure[user] = t
            events.append(_event("user.login", t + 0.5, user=user, ip=ip, outcome="failure"))
            events.append(_event("access.denied", t + 0.6, user=user, ip=ip, outcome="failure"))
    assert _run(events) == []


def test_each_rule_fires_on_its_crafted_history() -> None:
    brute = [_event("sso.login", i, user=f"u{i}", ip="203.0.113.9", outcome="failure")
             for i in range(5)]  # fmt: skip
    assert _run(brute) == ["failed_logins"]
    denied = [_event("access.denied", i, outcome="failure") for i in range(5)]
    assert _run(denied) == ["denied_burst"]
    admin = [_event("user.login", 0), _event("user.login", 60, ip="198.51.100.7")]
    assert _run(admin, ("editor",)) == ["admin_new_source"]
    assert _run(admin, ("access",)) == []  # not an admin: learnt, not flagged
    slow = [_event("access.denied", i * 120, outcome="failure") for i in range(5)]
    assert _run(slow) == []  # never five within five minutes


async def test_the_evaluator_commits_signals_and_locks() -> None:
    fx = await make_auth()
    config = RiskConfig(denied_burst=BurstRule(threshold=3, window=WINDOW,
                                               lock_ttl=timedelta(minutes=10)))  # fmt: skip
    evaluator = RiskEvaluator.for_auth(config, fx.auth)
    assert await evaluator.step() == []  # starts at the head
    for _ in range(3):
        await fx.auth.audit.emit("access.denied", outcome="failure", user="mallory")
    fired = await evaluator.step()
    assert [s.rule for s in fired] == ["denied_burst"]
    assert not (await fx.auth.lock_decision(LockTargets(user="mallory"))).allowed
    signals = [e for e in await fx.auth.audit.read_from(0, 1000) if e.type == "risk.signal"]
    assert len(signals) == 1 and signals[0].fields["action"] == "lock"
    assert len(signals[0].fields["evidence"]) == 3 and signals[0].fields["changes"]
    assert await evaluator.step() == []  # its own events are not evidence
    fx.clock.advance(timedelta(minutes=11))
    assert (await fx.auth.lock_decision(LockTargets(user="mallory"))).allowed
