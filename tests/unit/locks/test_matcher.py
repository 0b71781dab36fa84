"""Lock matching and the strict/best-effort decision (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.live.registry import LiveConnection
from bastion.locks.matcher import (
    Locked,
    LockTargets,
    LockView,
    decide,
    describe_target,
    effective_mode,
    identity_targets,
    lock_matches,
    matching_locks,
)
from bastion.locks.watcher import connection_targets
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
FIELDS = (
    "user",
    "role",
    "login",
    "node",
    "device",
    "mfa_device",
    "access_request",
    "bot",
    "session",
)


def lock(
    name: str = "l1", expires: datetime | None = None, message: str = "", **target: str
) -> Lock:
    return Lock(
        metadata=Metadata(name=name, expires=expires),
        spec=LockSpec(target=LockTarget(**target), message=message),
    )


def alice(**kw: object) -> Identity:
    fields: dict[str, object] = {
        "cluster": "c",
        "user": "alice",
        "roles": ("dev", "ops"),
        "logins": ("alice", "root"),
        "expires": NOW + timedelta(hours=1),
        "device_id": "dev-1",
        "access_requests": ("req-1",),
    }
    fields.update(kw)
    return Identity.model_validate(fields)


TARGETS = identity_targets(alice(), login="root", nodes=("web1", "host-1"), session="s1")
VIEW_OK = LockView((), healthy=True, synced_at=NOW)


@pytest.mark.parametrize(
    ("target", "matches"),
    [
        ({"user": "alice"}, True),
        ({"user": "bob"}, False),
        ({"role": "ops"}, True),
        ({"role": "admin"}, False),
        ({"login": "root"}, True),
        ({"login": "alice"}, False),
        ({"node": "web1"}, True),
        ({"node": "host-1"}, True),
        ({"node": "db1"}, False),
        ({"device": "dev-1"}, True),
        ({"device": "dev-2"}, False),
        ({"access_request": "req-1"}, True),
        ({"session": "s1"}, True),
        ({"session": "s2"}, False),
        ({"mfa_device": "yubi"}, False),
        ({"bot": "alice"}, False),
        ({"user": "alice", "node": "web1"}, True),
        ({"user": "alice", "node": "db1"}, False),
        ({"user": "bob", "role": "ops"}, False),
    ],
)
def test_every_non_empty_field_must_match(target: dict[str, str], matches: bool) -> None:
    assert lock_matches(lock(**target), TARGETS, NOW) is matches


def test_expired_lock_never_matches() -> None:
    assert not lock_matches(lock(user="alice", expires=NOW), TARGETS, NOW)
    assert lock_matches(lock(user="alice", expires=NOW + timedelta(seconds=1)), TARGETS, NOW)


def test_host_identities_lock_as_nodes_only() -> None:
    host = Identity(
        cluster="c",
        user="host-9",
        kind="host",
        host_id="host-9",
        traits={"hostname": ("web9",)},
        expires=NOW,
    )
    targets = identity_targets(host)
    assert lock_matches(lock(node="web9"), targets, NOW)
    assert lock_matches(lock(node="host-9"), targets, NOW)
    assert not lock_matches(lock(user="host-9"), targets, NOW)


def test_bot_identity_is_lockable_as_bot() -> None:
    targets = identity_targets(alice(kind="bot", user="ci"))
    assert lock_matches(lock(bot="ci"), targets, NOW)


def test_connection_targets_include_node_aliases() -> None:
    conn = LiveConnection(
        kind="ssh",
        identity=alice(),
        target="web1",
        login="root",
        session_id="s1",
        extra={"host_id": "host-1"},
    )
    targets = connection_targets(conn)
    assert targets.nodes[:2] == ("web1", "host-1")
    assert targets.login == "root" and targets.session == "s1"


def test_decide_refuses_with_the_lock_message() -> None:
    view = LockView((lock(user="alice", message="laptop stolen"),), True, NOW)
    decision = decide(view, TARGETS, "best_effort", NOW)
    assert not decision.allowed
    assert decision.reason == "locked: laptop stolen"
    with pytest.raises(Locked, match="access denied: locked: laptop stolen") as info:
        decision.raise_if_denied()
    assert info.value.lock_name == "l1"


def test_decide_without_message_describes_the_target() -> None:
    view = LockView((lock(user="alice", node="web1"),), True, NOW)
    assert decide(view, TARGETS, "strict", NOW).reason == "locked: user=alice,node=web1"
    assert describe_target(lock(role="x")) == "role=x"


@pytest.mark.parametrize(
    ("view", "strict_allowed"),
    [
        (LockView((), healthy=True, synced_at=NOW), True),
        (LockView((), healthy=True, synced_at=NOW - timedelta(seconds=30)), True),
        (LockView((), healthy=True, synced_at=NOW - timedelta(seconds=31)), False),
        (LockView((), healthy=False, synced_at=NOW), False),
        (LockView((), healthy=True, synced_at=None), False),
    ],
)
def test_strict_refuses_unknown_state_best_effort_allows(
    view: LockView, strict_allowed: bool
) -> None:
    strict = decide(view, TARGETS, "strict", NOW)
    assert strict.allowed is strict_allowed
    if not strict_allowed:
        assert strict.reason.startswith("lock state unknown")
    assert decide(view, TARGETS, "best_effort", NOW).allowed


def test_effective_mode_strict_wins() -> None:
    assert effective_mode("best_effort", "best_effort") == "best_effort"
    assert effective_mode("strict", "best_effort") == "strict"
    assert effective_mode("best_effort", "strict") == "strict"


# ---- properties ---------------------------------------------------------------------------

values = st.sampled_from(["", "alice", "bob", "ops", "root", "web1", "dev-1", "s1", "req-1"])
targets_st = st.builds(
    LockTargets,
    user=values,
    roles=st.lists(values, max_size=3).map(tuple),
    login=values,
    nodes=st.lists(values, max_size=2).map(tuple),
    device=values,
    mfa_device=values,
    access_requests=st.lists(values, max_size=2).map(tuple),
    bot=values,
    session=values,
)
lock_targets_st = st.fixed_dictionaries({f: values for f in FIELDS}).filter(
    lambda d: any(d.values())
)
offsets = st.one_of(st.none(), st.integers(-100, 100))


def make(i: int, target: dict[str, str], offset: int | None) -> Lock:
    expires = None if offset is None else NOW + timedelta(seconds=offset)
    return lock(f"l{i}", expires, **target)


locks_st = st.lists(st.tuples(lock_targets_st, offsets), max_size=4).map(
    lambda xs: tuple(make(i, t, o) for i, (t, o) in enumerate(xs))
)


@given(
    locks_st,
    lock_targets_st,
    offsets,
    targets_st,
    st.sampled_from(["strict", "best_effort"]),
    st.booleans(),
)
def test_adding_a_lock_never_allows_more(
    locks: tuple[Lock, ...],
    extra: dict[str, str],
    offset: int | None,
    targets: LockTargets,
    mode: str,
    healthy: bool,
) -> None:
    before = decide(LockView(locks, healthy, NOW), targets, mode, NOW)
    after = decide(LockView((*locks, make(99, extra, offset)), healthy, NOW), targets, mode, NOW)
    assert not (after.allowed and not before.allowed)


@given(lock_targets_st, st.integers(-1000, 0), targets_st)
def test_expired_lock_never_matches_property(
    target: dict[str, str], offset: int, targets: LockTargets
) -> None:
    expired = lock("x", NOW + timedelta(seconds=offset), **target)
    assert not lock_matches(expired, targets, NOW)
    assert matching_locks([expired], targets, NOW) == []


@given(lock_targets_st, targets_st)
def test_a_lock_matching_refuses_in_every_mode(
    target: dict[str, str], targets: LockTargets
) -> None:
    the_lock = lock("x", **target)
    view = LockView((the_lock,), True, NOW)
    for mode in ("strict", "best_effort"):
        assert decide(view, targets, mode, NOW).allowed is not lock_matches(the_lock, targets, NOW)


# ---- mfa_device: the security key a certificate was obtained with ------------------------------


def test_mfa_device_lock_matches_the_certificates_device() -> None:
    session_cert = alice(mfa_device="key-7", mfa_verified=True, mfa_scope="session:web1:root")
    targets = identity_targets(session_cert, login="root", nodes=("web1",))
    assert targets.mfa_device == "key-7"
    assert lock_matches(lock(mfa_device="key-7"), targets, NOW)
    assert not lock_matches(lock(mfa_device="key-8"), targets, NOW)
    # with another field, both must match
    assert lock_matches(lock(mfa_device="key-7", user="alice"), targets, NOW)
    assert not lock_matches(lock(mfa_device="key-7", user="bob"), targets, NOW)
    decision = decide(VIEW_OK, targets, "best_effort", NOW)
    assert decision.allowed
    locked = decide(
        LockView((lock(mfa_device="key-7", message="key lost"),), True, NOW),
        targets,
        "best_effort",
        NOW,
    )
    assert not locked.allowed and locked.reason == "locked: key lost"


def test_certificate_without_mfa_device_is_not_matched_by_a_device_lock() -> None:
    targets = identity_targets(alice(), login="root", nodes=("web1",))
    assert targets.mfa_device == ""
    assert not lock_matches(lock(mfa_device="key-7"), targets, NOW)


def test_live_connection_carries_the_mfa_device() -> None:
    conn = LiveConnection(
        kind="ssh",
        identity=alice(mfa_device="key-7"),
        target="web1",
        login="root",
        remote_addr="1.2.3.4:5",
        started=NOW,
    )
    assert lock_matches(lock(mfa_device="key-7"), connection_targets(conn), NOW)


def test_every_lock_target_field_is_matched() -> None:
    """A field added to LockTarget tomorrow is matched, or this fails (the matcher is written
    field by field for speed)."""
    from dataclasses import fields as dc_fields
    from datetime import UTC, datetime

    from bastion.locks.matcher import LockTargets, lock_matches
    from bastion.types.access import Lock, LockSpec, LockTarget
    from bastion.types.meta import Metadata

    now = datetime(2026, 1, 1, tzinfo=UTC)
    plural = {"role": "roles", "node": "nodes", "access_request": "access_requests"}
    target_fields = {f.name for f in dc_fields(LockTargets)}
    for name in LockTarget.model_fields:
        lock = Lock(metadata=Metadata(name="l"), spec=LockSpec(target=LockTarget(**{name: "x"})))
        key = plural.get(name, name)
        assert key in target_fields, f"LockTargets has no field for lock target {name!r}"
        value: object = ("x",) if key in plural.values() else "x"
        assert lock_matches(lock, LockTargets(**{key: value}), now), name
        assert not lock_matches(lock, LockTargets(), now), name
