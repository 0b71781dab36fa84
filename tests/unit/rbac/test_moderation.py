"""Moderated sessions: who may join how, whether a session may run, what a leave does."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.rbac.moderation import (
    Participant,
    check_join,
    fulfilment,
    join_modes,
    leave_action,
    policy_sets,
)
from bastion.types.access import Role
from bastion.types.sessions import JOIN_MODES, SessionRequirePolicy


def role(name: str, *, options: dict[str, Any] | None = None, **sides: Any) -> Role:
    return Role.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "options": options or {},
                "allow": sides.get("allow", {}),
                "deny": sides.get("deny", {}),
            },
        }
    )


def policy(**kw: Any) -> SessionRequirePolicy:
    return SessionRequirePolicy.model_validate(kw)


MODERATOR = role(
    "auditor",
    allow={"join_sessions": [{"roles": ["prod"], "modes": ["moderator", "observer"]}]},
)
PEER = role("pair", allow={"join_sessions": [{"roles": ["*"], "modes": ["peer"]}]})
NO_PEERS = role("nopeer", deny={"join_sessions": [{"roles": ["*"], "modes": ["peer"]}]})
ONE_MOD = policy_sets([("prod", [policy(name="m", count=1)])], "ssh")


def test_join_rules_name_the_owner_roles_and_deny_wins() -> None:
    assert join_modes("bob", [MODERATOR], "alice", ["prod"], "ssh") == {"moderator", "observer"}
    assert join_modes("bob", [MODERATOR], "alice", ["dev"], "ssh") == frozenset()
    assert join_modes("bob", [PEER], "alice", ["dev"], "ssh") == {"peer"}
    assert join_modes("bob", [PEER, NO_PEERS], "alice", ["dev"], "ssh") == frozenset()
    assert join_modes("bob", [MODERATOR], "alice", ["prod"], "db") == frozenset()
    assert check_join("bob", [MODERATOR], "alice", ["prod"], "ssh", "moderator").allowed
    refused = check_join("bob", [MODERATOR], "alice", ["prod"], "ssh", "peer")
    assert not refused.allowed and "only as observer, moderator" in refused.reason
    own = check_join("alice", [MODERATOR], "alice", ["prod"], "ssh", "moderator")
    assert not own.allowed and "own session" in own.reason


def test_a_conditional_side_fails_closed() -> None:
    cond_allow = role(
        "c", allow={"where": "user.name == 'bob'", "join_sessions": [{"roles": ["*"]}]}
    )
    assert join_modes("bob", [cond_allow], "alice", ["prod"], "ssh") == frozenset()
    cond_deny = role(
        "d", deny={"where": "user.name == 'x'", "join_sessions": [{"roles": ["nobody"]}]}
    )
    assert join_modes("bob", [PEER, cond_deny], "alice", ["prod"], "ssh") == frozenset()


def test_a_session_waits_for_its_moderator_and_the_owner_never_counts() -> None:
    owner = Participant("alice", "owner", ("prod",))
    state = fulfilment(ONE_MOD, [owner], "alice")
    assert not state.met and state.waiting_for == ("role prod: 1 more moderator",)
    self_mod = Participant("alice", "moderator", ("prod",))
    assert not fulfilment(ONE_MOD, [owner, self_mod], "alice").met
    observer = Participant("bob", "observer")
    assert not fulfilment(ONE_MOD, [owner, observer], "alice").met
    assert fulfilment(ONE_MOD, [owner, Participant("bob", "moderator")], "alice").met
    assert leave_action(ONE_MOD, [owner, observer], "alice") == "terminate"
    paused = policy_sets([("prod", [policy(on_leave="pause")])], "ssh")
    assert leave_action(paused, [owner], "alice") == "pause"
    assert policy_sets([("prod", [policy(kinds=["db"])])], "ssh") == ()


def test_filters_and_counts() -> None:
    sets = policy_sets([("prod", [policy(count=2, filter='"sre" in user.roles')])], "ssh")
    sre = [Participant(f"m{i}", "moderator", ("sre",)) for i in range(2)]
    dev = Participant("d", "moderator", ("dev",))
    assert not fulfilment(sets, [sre[0], dev], "alice").met
    assert fulfilment(sets, sre, "alice").met
    assert "1 more moderator matching" in fulfilment(sets, [sre[0]], "alice").waiting_for[0]


def test_every_owner_role_needs_one_of_its_policies() -> None:
    sets = policy_sets(
        [
            ("prod", [policy(modes=["moderator"]), policy(modes=["peer"], count=2)]),
            ("pci", [policy(modes=["observer"], on_leave="pause")]),
        ],
        "ssh",
    )
    mod, obs = Participant("m", "moderator"), Participant("o", "observer")
    assert not fulfilment(sets, [mod], "alice").met
    assert fulfilment(sets, [mod, obs], "alice").met
    peers = [Participant("p1", "peer"), Participant("p2", "peer")]
    assert fulfilment(sets, [*peers, obs], "alice").met
    assert fulfilment(sets, [obs], "alice").on_leave == "terminate"
    assert fulfilment(sets, [mod], "alice").on_leave == "pause"


@pytest.mark.parametrize(
    "bad",
    [{"filter": "user.email == 'x'"}, {"filter": "nope"}, {"count": 0}, {"modes": []}],
)
def test_bad_policies_are_refused_when_written(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        policy(**bad)


modes = st.sampled_from(["owner", *JOIN_MODES])
users = st.sampled_from(["alice", "bob", "carol", "dave"])
participants = st.lists(st.builds(Participant, users, modes), max_size=6)
policies = st.builds(
    SessionRequirePolicy,
    modes=st.lists(st.sampled_from(JOIN_MODES), min_size=1, max_size=3, unique=True),
    count=st.integers(1, 3),
    on_leave=st.sampled_from(["terminate", "pause"]),
)
sets_st = st.lists(
    st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.lists(policies, min_size=1, max_size=3)),
    max_size=3,
).map(lambda pairs: policy_sets(pairs, "ssh"))


@given(sets_st, participants, participants)
def test_more_participants_never_unmeet(sets: Any, some: Any, more: Any) -> None:
    if fulfilment(sets, some, "alice").met:
        assert fulfilment(sets, [*some, *more], "alice").met


@given(sets_st, participants)
def test_the_owner_alone_is_never_enough(sets: Any, others: Any) -> None:
    only_owner = [p for p in others if p.user == "alice" or p.mode == "owner"]
    assert fulfilment(sets, only_owner, "alice").met == (not sets)


@given(sets_st, participants)
def test_observers_meet_only_policies_that_list_observers(sets: Any, crowd: Any) -> None:
    observers = [Participant(p.user, "observer") for p in crowd]
    if any("observer" in pol.modes for s in sets for pol in s.policies):
        return
    assert fulfilment(sets, observers, "alice").met == (not sets)


@given(sets_st, participants)
def test_leave_action_agrees_with_fulfilment(sets: Any, crowd: Any) -> None:
    state = fulfilment(sets, crowd, "alice")
    action = leave_action(sets, crowd, "alice")
    assert (action == "continue") == state.met
    assert state.met or len(state.waiting_for) >= 1


role_names = st.sampled_from(["prod", "dev", "*"])
rules = st.builds(
    dict,
    roles=st.lists(role_names, min_size=1, max_size=2),
    modes=st.lists(st.sampled_from(JOIN_MODES), min_size=1, max_size=3, unique=True),
)


@given(st.lists(rules, max_size=3), st.lists(rules, max_size=3), st.sampled_from(JOIN_MODES))
def test_deny_wins_and_decisions_agree(allow: Any, deny: Any, mode: Any) -> None:
    r = role("x", allow={"join_sessions": allow}, deny={"join_sessions": deny})
    got = join_modes("bob", [r], "alice", ["prod"], "ssh")
    denied = {m for rule in deny for m in rule["modes"] if {"prod", "*"} & set(rule["roles"])}
    assert not got & denied
    assert check_join("bob", [r], "alice", ["prod"], "ssh", mode).allowed == (mode in got)
    assert join_modes("alice", [r], "alice", ["prod"], "ssh") == frozenset()
