"""Each risk rule fires on a crafted history and stays quiet on a normal one; a generated
benign history fires nothing (pure: events in, signals out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.auth.risk_rules import RiskEngine, network_of
from bastion.types.audit import AuditEvent
from bastion.types.risk import RULE_TYPES, RiskRuleSpec

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)  # a Monday, 09:00 UTC
_ids = iter(range(10**9))


def ev(kind: str, at: timedelta, user: str = "alice", ip: str = "10.1.2.3",
       outcome: str = "success", target: str = "", device: str = "",
       **fields: object) -> AuditEvent:  # fmt: skip
    return AuditEvent(
        type=kind, time=T0 + at, user=user, remote_addr=ip, outcome=outcome, target=target,
        device_id=device, id=f"e{next(_ids)}", fields=dict(fields),
    )  # fmt: skip


def fired(events: list[AuditEvent], **rules: RiskRuleSpec) -> list[str]:
    specs = rules or {t: RiskRuleSpec.model_validate({"type": t}) for t in RULE_TYPES}
    engine = RiskEngine(specs)
    return [s.rule for e in events for s in engine.feed(e)]


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def days(n: int, hours: float = 0) -> timedelta:
    return timedelta(days=n, hours=hours)


def routine(user: str = "alice", ip: str = "10.1.2.3", n: int = 25) -> list[AuditEvent]:
    """A month of working-day logins around 09:00 from the office network."""
    return [ev("user.login", days(d, (d % 3) * 0.3), user=user, ip=ip) for d in range(n)]


def test_networks_are_24_and_48() -> None:
    assert network_of("10.1.2.3") == network_of("10.1.2.200") == "10.1.2.0/24"
    assert network_of("10.1.3.3") != network_of("10.1.2.3")
    assert network_of("2001:db8:1:2::1") == network_of("2001:db8:1:ffff::9") == "2001:db8:1::/48"
    assert network_of("::ffff:10.1.2.3") == "10.1.2.0/24"
    assert network_of("not an address") == "not an address"


def test_failed_logins_and_denied_burst() -> None:
    brute = [ev("sso.login", s(i), user=f"u{i}", ip="203.0.113.9", outcome="failure")
             for i in range(10)]  # fmt: skip
    assert fired(brute) == ["failed_logins"]
    denied = [ev("access.denied", s(i), outcome="failure") for i in range(20)]
    assert fired(denied) == ["denied_burst"]
    slow = [ev("access.denied", s(i * 10), outcome="failure") for i in range(20)]
    assert fired(slow) == []


def test_new_source_fires_for_a_new_network_or_device_after_history() -> None:
    normal = routine(n=5)
    assert fired(normal) == []
    moved = [*normal, ev("user.login", days(6), ip="198.51.100.7")]
    assert fired(moved, r=RiskRuleSpec(type="new_source")) == ["r"]
    same_net = [*normal, ev("user.login", days(6), ip="10.1.2.99")]
    assert fired(same_net, r=RiskRuleSpec(type="new_source")) == []
    device = [*[ev("user.login", days(d), device="laptop") for d in range(4)],
              ev("user.login", days(5), device="unknown-pc")]  # fmt: skip
    assert fired(device, r=RiskRuleSpec(type="new_source")) == ["r"]
    early = [ev("user.login", s(0)), ev("user.login", s(60), ip="198.51.100.7")]
    assert fired(early, r=RiskRuleSpec(type="new_source")) == []  # still learning
    v6 = [*routine(ip="2001:db8:1:2::1", n=5), ev("user.login", days(6), ip="2001:db8:1:9::5")]
    assert fired(v6, r=RiskRuleSpec(type="new_source")) == []  # same /48


def test_unusual_hour_needs_history_then_fires_at_a_rare_hour() -> None:
    rule = RiskRuleSpec(type="unusual_hour")
    night = ev("user.login", days(30, 16))  # 01:00 UTC
    assert fired([*routine(n=25), night], r=rule) == ["r"]
    assert fired([*routine(n=10), night], r=rule) == []  # not enough history yet
    assert fired([*routine(n=25), ev("user.login", days(30, 1))], r=rule) == []  # 10:00


def test_concurrent_networks_for_one_certificate() -> None:
    rule = RiskRuleSpec(type="concurrent_networks")
    a = ev("session.start", s(0), ip="10.1.2.3", target="n1", cert_serial="77")
    b = ev("session.start", s(30), ip="198.51.100.7", target="n2", cert_serial="77")
    assert fired([a, b], r=rule) == ["r"]
    later = ev("session.start", s(3600), ip="198.51.100.7", target="n2", cert_serial="77")
    assert fired([a, later], r=rule) == []  # not at once
    other = ev("session.start", s(30), ip="198.51.100.7", target="n2", cert_serial="78")
    assert fired([a, other], r=rule) == []  # another certificate
    near = ev("session.start", s(30), ip="10.1.2.77", target="n2", cert_serial="77")
    assert fired([a, near], r=rule) == []  # same network


def test_admin_action_right_after_a_login_from_a_new_source() -> None:
    rule = RiskRuleSpec(type="admin_new_source")
    known = [ev("user.login", days(0)), ev("user.login", days(1))]
    new = ev("user.login", days(2), ip="198.51.100.7")
    action = ev("role.update", days(2) + s(90), target="role/editor")
    assert fired([*known, new, action], r=rule) == ["r"]
    assert fired([*known, new], r=rule) == []  # a login alone is new_source's business
    late = ev("role.update", days(2) + timedelta(hours=2), target="role/editor")
    assert fired([*known, new, late], r=rule) == []
    home = ev("user.login", days(2))
    assert fired([*known, home, action], r=rule) == []
    other = ev("role.update", days(2) + s(90), user="bob")
    assert fired([*known, new, other], r=rule) == []


def test_lateral_movement() -> None:
    rule = RiskRuleSpec(type="lateral_movement")
    burst = [ev("session.start", s(i * 10), target=f"node{i}") for i in range(10)]
    assert fired(burst, r=rule) == ["r"]
    same = [ev("session.start", s(i * 10), target=f"node{i % 3}") for i in range(50)]
    assert fired(same, r=rule) == []
    spread = [ev("session.start", s(i * 60), target=f"node{i}") for i in range(10)]
    assert fired(spread, r=rule) == []


def test_actions_and_user_scopes() -> None:
    denied = [ev("access.denied", s(i), outcome="failure") for i in range(3)]
    lock = RiskRuleSpec(type="denied_burst", threshold=3, action="lock")
    engine = RiskEngine({"r": lock})
    signals = [x for e in denied for x in engine.feed(e)]
    assert [(x.action, x.user, x.ttl) for x in signals] == [("lock", "alice",
                                                             timedelta(minutes=15))]  # fmt: skip
    scoped = RiskRuleSpec(type="denied_burst", threshold=3, users=["bob*"])
    assert fired(denied, r=scoped) == []
    assert fired([ev("access.denied", s(i), user="bobby") for i in range(3)], r=scoped) == ["r"]
    assert fired(denied, r=RiskRuleSpec(type="denied_burst", threshold=3, enabled=False)) == []


def test_reconfigure_keeps_the_state_of_unchanged_rules() -> None:
    spec = RiskRuleSpec(type="denied_burst", threshold=3)
    engine = RiskEngine({"r": spec})
    for i in range(2):
        assert engine.feed(ev("access.denied", s(i))) == []
    engine.reconfigure({"r": spec, "x": RiskRuleSpec(type="new_source")})
    assert [x.rule for x in engine.feed(ev("access.denied", s(2)))] == ["r"]


HOURS = st.integers(8, 11)


@given(st.lists(st.tuples(st.sampled_from(["alice", "bob", "carol"]), st.integers(0, 59),
                          HOURS, st.integers(0, 3599)), max_size=80))  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_a_benign_history_fires_nothing(raw: list[tuple[str, int, int, int]]) -> None:
    """Users log in on working days from their own network and device, at their usual hours,
    fail now and then, and work on a few nodes with one certificate each: nothing fires."""
    users = ["alice", "bob", "carol"]
    events: list[AuditEvent] = []
    for user, day, hour, second in sorted(raw, key=lambda p: (p[1], p[2], p[3])):
        n = users.index(user)
        ip, at = f"10.1.{n}.{5 + day % 7}", timedelta(days=day, hours=hour - 9, seconds=second)
        events += [
            ev("user.login", at, user=user, ip=ip, device=f"laptop-{n}"),
            ev("user.login", at + s(1), user=user, ip=ip, outcome="failure"),
            ev("access.denied", at + s(2), user=user, ip=ip, outcome="failure"),
            ev("session.start", at + s(3), user=user, ip=ip, target=f"node{day % 3}",
               cert_serial=f"{user}-{day}-{hour}-{second}"),
            ev("role.update", at + s(4), user=user, ip=ip),
        ]  # fmt: skip
    events.sort(key=lambda e: e.time)
    assert fired(events) == []
