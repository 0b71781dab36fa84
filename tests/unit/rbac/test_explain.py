"""Access explained: the explanation is the checker's decision, and each role's part in it.

Property: on random role sets, the printed decision equals the checker's; an allowing decision
names a role whose own verdict is "allows"; a denying role's verdict is "denies".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.rbac import RoleSet
from bastion.rbac.explain import Subject, explain_node_access, reachable, who_can
from bastion.types.access import Role, RoleConditions, RoleOptions, RoleSpec
from bastion.types.meta import Metadata

NOON = datetime(2026, 12, 7, 12, tzinfo=UTC)


def role(
    name: str,
    allow: dict[str, Any] | None = None,
    deny: dict[str, Any] | None = None,
    mfa: bool = False,
) -> Role:
    return Role(
        metadata=Metadata(name=name),
        spec=RoleSpec(
            allow=RoleConditions(**(allow or {})),
            deny=RoleConditions(**(deny or {})),
            options=RoleOptions(require_session_mfa=mfa),
        ),
    )


DEV = role("dev", {"logins": ["alice"], "node_labels": {"env": "dev"}})
PROD = role("prod", {"logins": ["root"], "node_labels": {"env": "prod"}}, mfa=True)
NO_DB = role("no-db", deny={"node_labels": {"tier": "db"}})


def test_explain_names_every_role() -> None:
    alice = Subject("alice", (DEV, PROD, NO_DB), {})
    ctx = alice.context(time=NOON)
    allowed = explain_node_access(alice, "web1", {"env": "prod"}, "root", context=ctx)
    assert allowed.decision.allowed and allowed.decision.mfa_required
    verdicts = {f.role: f.verdict for f in allowed.roles}
    assert verdicts == {"dev": "does not grant", "prod": "allows", "no-db": "does not grant"}
    denied = explain_node_access(alice, "db7", {"env": "prod", "tier": "db"}, "root", context=ctx)
    assert not denied.decision.allowed and denied.decision.role == "no-db"
    assert {f.role: f.verdict for f in denied.roles}["no-db"] == "denies"
    data = denied.to_dict()
    assert data["allowed"] is False and "no-db" in data["reason"] and len(data["roles"]) == 3


def test_reachable_and_who() -> None:
    alice = Subject("alice", (DEV, PROD), {})
    bob = Subject("bob", (DEV,), {})
    nodes = [("web1", {"env": "prod"}), ("dev1", {"env": "dev"}), ("x", {})]
    grants = reachable(alice, nodes, context=alice.context(time=NOON))
    assert [(g.node, g.login, g.role) for g in grants] == [
        ("web1", "root", "prod"),
        ("dev1", "alice", "dev"),
    ]
    assert grants[0].mfa_required and not grants[1].mfa_required
    who = who_can([alice, bob], [("dev1", {"env": "dev"})], "alice", time=NOON)
    assert [g.user for g in who] == ["alice", "bob"]
    assert who_can([alice, bob], [("web1", {"env": "prod"})], "root", time=NOON)[0].user == "alice"


def test_where_conditions_in_who() -> None:
    oncall = role(
        "oncall",
        {"logins": ["root"], "node_labels": {"*": "*"}, "where": '"oncall" in user.traits.groups'},
    )
    carol = Subject("carol", (oncall,), {"groups": ["oncall"]})
    dave = Subject("dave", (oncall,), {"groups": ["dev"]})
    assert [g.user for g in who_can([carol, dave], [("n", {})], "root", time=NOON)] == ["carol"]


_labels = st.dictionaries(st.sampled_from(["env", "tier"]), st.sampled_from(["prod", "dev", "db"]))
_selector = st.sampled_from([{}, {"*": "*"}, {"env": "prod"}, {"tier": "db"}, {"env": ["dev"]}])
_logins = st.lists(st.sampled_from(["root", "alice"]), max_size=2)
_where = st.sampled_from(["", "request.time.getHours() < 12", 'resource.labels.env == "prod"'])
_side = st.builds(
    lambda lg, sel, w: {"logins": lg, "node_labels": sel, "where": w}, _logins, _selector, _where
)
_roles = st.lists(
    st.tuples(st.one_of(st.none(), _side), st.one_of(st.none(), _side), st.booleans()),
    max_size=4,
).map(lambda specs: [role(f"r{i}", a, d, m) for i, (a, d, m) in enumerate(specs)])


@settings(max_examples=200, deadline=None)
@given(_roles, _labels, st.sampled_from(["root", "alice"]), st.integers(0, 23), st.booleans())
def test_explanation_matches_checker(
    roles: list[Role], labels: dict[str, str], login: str, hour: int, cluster_mfa: bool
) -> None:
    subject = Subject("u", tuple(roles), {})
    when = NOON.replace(hour=hour)
    explanation = explain_node_access(
        subject,
        "n",
        labels,
        login,
        context=subject.context(time=when),
        cluster_requires_mfa=cluster_mfa,
    )
    direct = RoleSet.from_roles(roles, {}).check_node_access(
        "n", labels, login, cluster_requires_mfa=cluster_mfa, context=subject.context(time=when)
    )
    assert explanation.decision == direct
    verdicts = {f.role: f.verdict for f in explanation.roles}
    if direct.allowed:
        assert verdicts[direct.role or ""] == "allows"
    elif direct.role is not None:
        assert verdicts[direct.role] == "denies"
    else:
        assert "allows" not in verdicts.values()
    grants = reachable(
        subject,
        [("n", labels)],
        context=subject.context(time=when),
        cluster_requires_mfa=cluster_mfa,
    )
    assert any(g.login == login for g in grants) is direct.allowed
