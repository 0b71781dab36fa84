"""``where`` conditions in the checker: time, traits, labels, source IP; fail closed; deny wins.

The Hypothesis property: adding a ``where`` to an allow side never grants more than the same
role without it, whatever the condition, the request or the resource.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import BadParameter
from bastion.rbac import AccessContext, RoleSet
from bastion.rbac.conditions import source_ip_of
from bastion.types import load_resources
from bastion.types.access import Role, RoleConditions, RoleSpec
from bastion.types.meta import Metadata

BUSINESS = "request.time.getHours() >= 8 && request.time.getHours() < 18"
ONCALL = '"oncall" in user.traits.groups'
PROD = 'resource.labels.env == "prod"'
OFFICE = 'request.source_ip.startsWith("10.")'
MONDAY_10 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
MONDAY_22 = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)


def role(
    name: str, allow: dict[str, Any] | None = None, deny: dict[str, Any] | None = None
) -> Role:
    return Role(
        metadata=Metadata(name=name),
        spec=RoleSpec(allow=RoleConditions(**(allow or {})), deny=RoleConditions(**(deny or {}))),
    )


def ctx(
    *,
    time: datetime | None = MONDAY_10,
    groups: tuple[str, ...] = ("oncall",),
    ip: str = "10.1.2.3",
    mfa: bool = False,
) -> AccessContext:
    traits = {"groups": list(groups)} if groups else {}
    return AccessContext(
        user="alice", roles=("ops",), traits=traits, source_ip=ip, time=time, mfa_verified=mfa
    )


def grants(where: str) -> RoleSet:
    allowed = role("ops", {"logins": ["root"], "node_labels": {"*": "*"}, "where": where})
    return RoleSet.from_roles([allowed], {})


@pytest.mark.parametrize(
    ("where", "context", "labels", "allowed"),
    [
        (BUSINESS, ctx(), {}, True),
        (BUSINESS, ctx(time=MONDAY_22), {}, False),
        (ONCALL, ctx(), {}, True),
        (ONCALL, ctx(groups=("dev",)), {}, False),
        (PROD, ctx(), {"env": "prod"}, True),
        (PROD, ctx(), {"env": "dev"}, False),
        (OFFICE, ctx(), {}, True),
        (OFFICE, ctx(ip="192.0.2.7"), {}, False),
        ("request.mfa_verified", ctx(mfa=True), {}, True),
        ("request.mfa_verified", ctx(), {}, False),
        ('user.name == "alice" && "ops" in user.roles', ctx(), {}, True),
        ('resource.name == "db7" && resource.kind == "node"', ctx(), {}, True),
    ],
)
def test_conditions_allow_and_deny_as_written(
    where: str, context: AccessContext, labels: dict[str, str], allowed: bool
) -> None:
    decision = grants(where).check_node_access("db7", labels, "root", context=context)
    assert decision.allowed is allowed, decision.reason
    if not allowed:
        assert "condition not met" in decision.reason and where in decision.reason


def test_time_reads_in_the_cluster_zone() -> None:
    paris_19h = MONDAY_22.astimezone(timezone(timedelta(hours=1))) - timedelta(hours=4)  # 19:00
    at_07_utc = datetime(2026, 12, 7, 7, 30, tzinfo=UTC)  # 08:30 in UTC+1
    rs = grants(BUSINESS)
    assert not rs.check_node_access("n", {}, "root", context=ctx(time=paris_19h)).allowed
    plus_one = at_07_utc.astimezone(timezone(timedelta(hours=1)))
    assert rs.check_node_access("n", {}, "root", context=ctx(time=plus_one)).allowed
    assert not rs.check_node_access("n", {}, "root", context=ctx(time=at_07_utc)).allowed


def test_runtime_error_denies_and_explains() -> None:
    # A missing trait is a runtime error (no such key): the allow fails closed.
    decision = grants('user.traits.team[0] == "dba"').check_node_access(
        "n", {}, "root", context=ctx()
    )
    assert not decision.allowed
    assert "condition failed" in decision.reason and "team" in decision.reason


def test_unknown_time_fails_closed() -> None:
    decision = grants(BUSINESS).check_node_access("n", {}, "root", context=ctx(time=None))
    assert not decision.allowed and "time is unknown" in decision.reason


def test_no_context_fails_closed_for_allow_and_deny() -> None:
    assert not grants(ONCALL).check_node_access("n", {}, "root").allowed
    base = role("base", {"logins": ["root"], "node_labels": {"*": "*"}})
    deny = role("night", deny={"node_labels": {"*": "*"}, "where": "!(" + BUSINESS + ")"})
    decision = RoleSet.from_roles([base, deny], {}).check_node_access("n", {}, "root")
    assert not decision.allowed and 'role "night" denies' in decision.reason
    assert "no request context" in decision.reason


def test_deny_where_still_wins() -> None:
    base = role("base", {"logins": ["root"], "node_labels": {"*": "*"}})
    night = role("night", deny={"node_labels": {"env": "prod"}, "where": "!(" + BUSINESS + ")"})
    rs = RoleSet.from_roles([base, night], {})
    assert rs.check_node_access("n", {"env": "prod"}, "root", context=ctx()).allowed
    late = rs.check_node_access("n", {"env": "prod"}, "root", context=ctx(time=MONDAY_22))
    assert not late.allowed and late.role == "night" and "condition holds" in late.reason
    assert rs.check_node_access("n", {"env": "dev"}, "root", context=ctx(time=MONDAY_22)).allowed


def test_deny_login_with_where() -> None:
    base = role("base", {"logins": ["root"], "node_labels": {"*": "*"}})
    off = role("no-root-offsite", deny={"logins": ["root"], "where": "!(" + OFFICE + ")"})
    rs = RoleSet.from_roles([base, off], {})
    assert rs.check_node_access("n", {}, "root", context=ctx()).allowed
    away = rs.check_node_access("n", {}, "root", context=ctx(ip="192.0.2.1"))
    assert not away.allowed and away.role == "no-root-offsite"
    assert rs.allowed_logins() == ["root"]  # conditional denies are decided per connection


def test_visibility_listing_shows_conditional_grants() -> None:
    rs = grants(ONCALL)
    assert rs.check_node_visible("n", {}).allowed
    assert not rs.check_node_visible("n", {}, context=ctx(groups=("dev",))).allowed


def test_db_and_app_conditions() -> None:
    db = role("db", {"db_labels": {"*": "*"}, "db_users": ["reader"], "where": ONCALL})
    app = role("app", {"app_labels": {"*": "*"}, "where": PROD})
    rs = RoleSet.from_roles([db, app], {})
    assert rs.check_db_access({}, "reader", context=ctx()).allowed
    refused = rs.check_db_access({}, "reader", context=ctx(groups=()))
    assert not refused.allowed and "condition" in refused.reason
    assert rs.check_app_access({"env": "prod"}, app_name="grafana", context=ctx()).allowed
    assert not rs.check_app_access({"env": "dev"}, app_name="grafana", context=ctx()).allowed


def test_resource_independent_condition_is_evaluated_once() -> None:
    context = ctx()
    rs = grants(ONCALL)
    for i in range(5):
        assert rs.check_node_access(f"n{i}", {}, "root", context=context).allowed
    assert list(context._memo) == [ONCALL]


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("user.nme == 'a'", "unknown field user.nme"),
        ("usr.name == 'a'", "unknown variable 'usr'"),
        ("user.name > 5", "type error"),
        ("request.mfa_verified && user.name > 5", "type error"),
        ("user.name", "must be true or false"),
        ("request.time.getHours() in [8..18]", "syntax error"),
        ("[1].all(a, [1].all(b, [1].all(c, true)))", "nested 3 deep"),
        ("true || " * 200 + "true", "characters long"),
    ],
)
def test_bad_conditions_refused_at_create_naming_role_and_field(where: str, problem: str) -> None:
    text = f"kind: role\nmetadata: {{name: dev}}\nspec:\n  allow:\n    where: {json.dumps(where)}\n"
    with pytest.raises(BadParameter) as err:
        load_resources(text)
    assert 'role "dev": spec.allow.where:' in str(err.value)
    assert problem in str(err.value)


@pytest.mark.parametrize(
    ("addr", "ip"),
    [("10.0.0.1", "10.0.0.1"), ("10.0.0.1:5555", "10.0.0.1"), ("[::1]:22", "::1"), ("x", "")],
)
def test_source_ip_of(addr: str, ip: str) -> None:
    assert source_ip_of(addr) == ip


# -- property: a condition never widens -------------------------------------------------------

_WHERES = [
    BUSINESS,
    ONCALL,
    PROD,
    OFFICE,
    "request.mfa_verified",
    "true",
    "false",
    'user.traits.team[0] == "dba"',
    '"prod" in resource.labels',
]
_labels = st.dictionaries(st.sampled_from(["env", "team"]), st.sampled_from(["prod", "dev"]))
_selector = st.sampled_from([{"*": "*"}, {"env": "prod"}, {"env": ["dev", "prod"]}, {}])
_logins = st.lists(st.sampled_from(["root", "alice"]), max_size=2)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_logins, _selector, st.sampled_from(_WHERES)), min_size=1, max_size=4),
    _labels,
    st.sampled_from(["root", "alice"]),
    st.integers(min_value=0, max_value=23),
    st.sampled_from([(), ("oncall",)]),
    st.sampled_from(["10.0.0.1", "192.0.2.1"]),
    st.booleans(),
)
def test_where_never_allows_more(
    sides: list[tuple[list[str], dict[str, Any], str]],
    labels: dict[str, str],
    login: str,
    hour: int,
    groups: tuple[str, ...],
    ip: str,
    mfa: bool,
) -> None:
    with_where = [
        role(f"r{i}", {"logins": lg, "node_labels": sel, "where": w})
        for i, (lg, sel, w) in enumerate(sides)
    ]
    without = [
        role(f"r{i}", {"logins": lg, "node_labels": sel}) for i, (lg, sel, _) in enumerate(sides)
    ]
    context = ctx(time=MONDAY_10.replace(hour=hour), groups=groups, ip=ip, mfa=mfa)
    conditional = RoleSet.from_roles(with_where, {}).check_node_access(
        "n", labels, login, context=context
    )
    plain = RoleSet.from_roles(without, {}).check_node_access("n", labels, login, context=context)
    if conditional.allowed:
        assert plain.allowed
