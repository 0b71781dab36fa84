"""The risk evaluator: signals committed with their action, a persisted cursor (a restart
neither replays nor skips), stored rules replacing built-ins, and the dry-run replay."""

from __future__ import annotations

import json
from datetime import timedelta

from bastion.auth.risk import (
    CURSOR_KEY,
    RiskEvaluator,
    builtin_rules,
    replay,
    rule_set,
    rule_status,
)
from bastion.auth.step_up import step_up_key
from bastion.clock import FakeClock
from bastion.config.risk import BurstRule, RiskConfig
from bastion.errors import NotFound
from bastion.locks.matcher import LockTargets
from bastion.testing import AuthFixture, make_auth
from bastion.types.meta import Metadata
from bastion.types.risk import RULE_TYPES, RiskRule, RiskRuleSpec

WINDOW = timedelta(minutes=5)


def _advance(fx: AuthFixture, delta: timedelta) -> None:
    assert isinstance(fx.clock, FakeClock)
    fx.clock.advance(delta)


async def _deny(fx: AuthFixture, user: str, n: int) -> None:
    for _ in range(n):
        await fx.auth.audit.emit("access.denied", outcome="failure", user=user)


async def _signals(fx: AuthFixture) -> list[dict[str, object]]:
    return [e.fields for e in await fx.auth.audit.read_from(0, 10_000) if e.type == "risk.signal"]


async def _store_rule(fx: AuthFixture, name: str, **spec: object) -> None:
    rule = RiskRule(metadata=Metadata(name=name), spec=RiskRuleSpec.model_validate(spec))
    await fx.auth.create_resource(rule, "admin", force=True)


def test_builtins_cover_every_type_and_take_the_config() -> None:
    config = RiskConfig(denied_burst=BurstRule(threshold=3, window=WINDOW,
                                               lock_ttl=timedelta(minutes=10)))  # fmt: skip
    rules = builtin_rules(config)
    assert set(rules) == set(RULE_TYPES)
    assert rules["denied_burst"].action == "lock" and rules["denied_burst"].threshold == 3
    assert all(r.action == "alert" for n, r in rules.items() if n != "denied_burst")


async def test_the_evaluator_commits_signals_and_locks() -> None:
    fx = await make_auth()
    config = RiskConfig(denied_burst=BurstRule(threshold=3, window=WINDOW,
                                               lock_ttl=timedelta(minutes=10)))  # fmt: skip
    evaluator = RiskEvaluator.for_auth(config, fx.auth)
    assert await evaluator.step() == []  # starts at the head
    await _deny(fx, "mallory", 3)
    fired = await evaluator.step()
    assert [s.rule for s in fired] == ["denied_burst"]
    assert not (await fx.auth.lock_decision(LockTargets(user="mallory"))).allowed
    (signal,) = await _signals(fx)
    assert signal["action"] == "lock" and len(signal["evidence"]) == 3  # type: ignore[arg-type]
    assert signal["changes"]
    assert await evaluator.step() == []  # its own events are not evidence
    _advance(fx, timedelta(minutes=11))
    assert (await fx.auth.lock_decision(LockTargets(user="mallory"))).allowed


async def test_a_restart_neither_replays_nor_skips() -> None:
    fx = await make_auth()
    config = RiskConfig(denied_burst=BurstRule(threshold=3, window=WINDOW))
    first = RiskEvaluator.for_auth(config, fx.auth)
    await first.step()
    await _deny(fx, "mallory", 3)
    assert len(await first.step()) == 1
    await _deny(fx, "trudy", 2)  # appended while the evaluator is down ...
    second = RiskEvaluator.for_auth(config, fx.auth)  # ... a restart
    assert await second.step() == []  # mallory's burst is not fired again
    await _deny(fx, "trudy", 1)
    assert [s.subject for s in await second.step()] == ["user:trudy"]  # nothing skipped
    assert len(await _signals(fx)) == 2
    stored = json.loads((await fx.backend.get(CURSOR_KEY)).value)["next_index"]
    assert stored == second.cursor == await fx.auth.audit.size() - 1  # trudy's signal follows


async def test_two_evaluators_over_one_log_fire_each_signal_once() -> None:
    """HA: two auth servers run an evaluator each; the cursor's revision arbitrates."""
    fx = await make_auth()
    config = RiskConfig(denied_burst=BurstRule(threshold=3, window=WINDOW,
                                               lock_ttl=timedelta(minutes=10)))  # fmt: skip
    a = RiskEvaluator.for_auth(config, fx.auth)
    b = RiskEvaluator.for_auth(config, fx.auth)
    await a.step()
    await b.step()
    for user in ("mallory", "trudy", "oscar"):
        await _deny(fx, user, 3)
        fired = [*await a.step(), *await b.step(), *await a.step()]
        assert len(fired) == 1, fired  # the second one lost the cursor race and caught up
    assert [s["subject"] for s in await _signals(fx)] == [
        "user:mallory", "user:trudy", "user:oscar",
    ]  # fmt: skip
    assert await b.step() == []
    assert a.cursor == b.cursor == await fx.auth.audit.size()


async def test_history_is_learnt_at_start_not_alerted() -> None:
    fx = await make_auth()
    for _ in range(4):
        await fx.auth.audit.emit("user.login", user="alice", remote_addr="10.1.2.3")
    evaluator = RiskEvaluator.for_auth(RiskConfig(), fx.auth)
    assert await evaluator.step() == []
    await fx.auth.audit.emit("user.login", user="alice", remote_addr="198.51.100.7")
    assert [s.rule for s in await evaluator.step()] == ["new_source"]  # learnt the office


async def test_stored_rules_replace_builtins_and_step_up_flags_the_user() -> None:
    fx = await make_auth()
    evaluator = RiskEvaluator.for_auth(RiskConfig(), fx.auth)
    await evaluator.step()
    await _store_rule(fx, "denied_burst", type="denied_burst", threshold=2, action="step_up",
                      lock_ttl="1h")  # fmt: skip
    await _store_rule(fx, "quiet", type="lateral_movement", enabled=False)
    await _deny(fx, "mallory", 2)
    (signal,) = await evaluator.step()
    assert signal.action == "step_up"
    flag = await fx.backend.get(step_up_key("mallory"))
    assert flag.expires is not None
    rules = await rule_set(RiskConfig(), fx.auth.store("risk_rule"))
    assert rules["denied_burst"].threshold == 2 and not rules["quiet"].enabled
    status, cursor = await rule_status(RiskConfig(), fx.auth.store("risk_rule"), fx.backend)
    row = next(r for r in status if r.name == "denied_burst")
    assert not row.builtin and row.last_fired and row.last_subject == "user:mallory"
    assert cursor == evaluator.cursor
    _advance(fx, timedelta(hours=2))
    try:
        await fx.backend.get(step_up_key("mallory"))
        raise AssertionError("the step-up demand lapses after its ttl")
    except NotFound:
        pass


async def test_replay_reports_without_committing() -> None:
    fx = await make_auth()
    start = fx.clock.now()
    await _deny(fx, "mallory", 20)
    _advance(fx, timedelta(hours=1))
    rules = builtin_rules(RiskConfig())
    signals, read = await replay(rules, fx.auth.audit, start - timedelta(seconds=1))
    assert [s.rule for s in signals] == ["denied_burst"] and read >= 20
    assert await _signals(fx) == []
    later, _ = await replay(rules, fx.auth.audit, fx.clock.now())
    assert later == []
