"""The solver's answers checked against the real checker (issue 19).

Every "holds" is cross-checked on random users, nodes, logins and requests (no access the
checker allows breaks it); every counterexample is replayed independently and must really
break the assertion.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.rbac import AccessContext, RoleSet
from bastion.rbac.solver import Assertion, load_assertions, verify_one
from bastion.rbac.solver.verify import Counterexample
from bastion.types.access import Role, RoleConditions, RoleOptions, RoleSpec
from bastion.types.codec import load_resources
from bastion.types.meta import Metadata

VALUES = ["prod", "dev", "yes", "dba", "web"]
KEYS = ["env", "pci", "team"]
LOGINS = ["root", "ubuntu", "alice"]
SELECTOR_VALUES = [*VALUES, "*", "^(prod|dev)$", "^d.*$", "{{external.team}}"]
LOGIN_VALUES = [*LOGINS, "{{internal.logins}}", "{{external.team}}-admin"]
WHERES = [
    "",
    '"dba" in user.traits.team',
    'resource.labels.env == "prod"',
    "request.mfa_verified",
    '!("web" in user.traits.team) || has(resource.labels.pci)',
    "request.time.getHours() >= 8 && request.time.getHours() < 18",
]


def _side(draw: Any, deny: bool) -> RoleConditions:
    logins = draw(st.lists(st.sampled_from(LOGIN_VALUES), max_size=2))
    keys = draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True))
    labels = {
        k: draw(st.lists(st.sampled_from(SELECTOR_VALUES), min_size=1, max_size=2)) for k in keys
    }
    if not deny and draw(st.booleans()) and draw(st.booleans()):
        labels = {"*": ["*"]}
    where = draw(st.sampled_from(WHERES)) if draw(st.booleans()) else ""
    return RoleConditions(logins=logins, node_labels=labels, where=where)


@st.composite
def role_sets(draw: Any) -> list[Role]:
    roles = []
    for i in range(draw(st.integers(1, 4))):
        deny = _side(draw, True) if draw(st.integers(0, 3)) == 0 else RoleConditions()
        spec = RoleSpec(
            allow=_side(draw, False),
            deny=deny,
            options=RoleOptions(require_session_mfa=draw(st.booleans())),
        )
        roles.append(Role(metadata=Metadata(name=f"r{i}"), spec=spec))
    return roles


@st.composite
def assertions(draw: Any) -> Assertion:
    expect = draw(st.sampled_from(["unreachable", "session_mfa", "only"]))
    data: dict[str, Any] = {"name": "a", "expect": expect}
    if draw(st.booleans()):
        data["resource"] = {"labels": {draw(st.sampled_from(KEYS)): draw(st.sampled_from(VALUES))}}
    if draw(st.booleans()):
        data["login"] = draw(st.sampled_from(LOGINS))
    if draw(st.booleans()):
        data["user"] = {"roles": ["r0"], "other_roles": draw(st.booleans())}
    if expect == "only":
        data["only"] = {"traits": {"team": ["dba"]}}
    return Assertion.model_validate(data)


@st.composite
def accesses(draw: Any, roles: list[Role]) -> Counterexample:
    names = [r.metadata.name for r in roles]
    held = tuple(n for n in names if draw(st.booleans()))
    traits: dict[str, list[str]] = {}
    for trait in ("team", "logins"):
        if draw(st.booleans()):
            traits[trait] = draw(st.lists(st.sampled_from([*VALUES, *LOGINS, "*"]), max_size=2))
    labels = {k: draw(st.sampled_from(VALUES)) for k in KEYS if draw(st.booleans())}
    login = draw(st.sampled_from([*LOGINS, "dba-admin", "web-admin", "prod"]))
    hour = draw(st.integers(0, 23))
    return Counterexample(
        user="u",
        roles=held,
        traits=traits,
        node="n",
        labels=labels,
        login=login,
        mfa_verified=draw(st.booleans()),
        time=datetime(2026, 1, 5, hour, tzinfo=UTC),
    )


def _breaks(assertion: Assertion, roles: list[Role], cx: Counterexample) -> bool:
    """An independent statement of the assertion, over the real checker."""
    held = [r for r in roles if r.metadata.name in cx.roles]
    ctx = AccessContext(
        user=cx.user, roles=cx.roles, traits=cx.traits, time=cx.time, mfa_verified=cx.mfa_verified
    )
    decision = RoleSet.from_roles(held, cx.traits).check_node_access(
        cx.node, cx.labels, cx.login, context=ctx
    )
    scope = assertion.user
    in_scope = (
        set(scope.roles) <= set(cx.roles)
        and (scope.other_roles or set(cx.roles) == set(scope.roles))
        and all(cx.labels.get(k) in v for k, v in assertion.resource.labels.items())
        and (not assertion.login or cx.login in assertion.login)
    )
    if not in_scope or not decision.allowed:
        return False
    if assertion.expect == "session_mfa":
        return not decision.mfa_required
    if assertion.expect == "only":
        return "dba" not in cx.traits.get("team", [])
    return True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), roles=role_sets(), assertion=assertions())
def test_answers_agree_with_the_checker(data: Any, roles: list[Role], assertion: Assertion) -> None:
    result = verify_one(roles, assertion, timeout_ms=20_000)
    if result.status == "fails":
        assert result.counterexample is not None
        assert _breaks(assertion, roles, result.counterexample), result.counterexample
    elif result.status == "holds":
        for _ in range(40):
            cx = data.draw(accesses(roles))
            assert not _breaks(assertion, roles, cx), (result, cx)


ROLES = """
kind: role
metadata: {name: dba}
spec:
  allow: {logins: [root], node_labels: {env: prod}, where: '"dba" in user.traits.team'}
  options: {require_session_mfa: true}
---
kind: role
metadata: {name: contractor}
spec:
  allow: {logins: [ubuntu], node_labels: {team: "{{external.team}}"}}
  deny: {node_labels: {pci: "yes"}}
---
kind: role
metadata: {name: dev}
spec:
  allow: {logins: ["{{internal.logins}}"], node_labels: {env: dev}}
"""
ASSERTIONS = """
assertions:
  - {name: dbas, resource: {labels: {env: prod}}, login: root, expect: only,
     only: {traits: {team: [dba]}}}
  - {name: mfa, resource: {labels: {env: prod}}, login: root, expect: session_mfa}
  - {name: pci, user: {roles: [contractor]}, resource: {labels: {pci: "yes"}},
     expect: unreachable}
  - {name: prod, user: {roles: [contractor]}, resource: {labels: {env: prod}},
     expect: unreachable}
"""


def _results() -> dict[str, Any]:
    roles = [r for r in load_resources(ROLES) if isinstance(r, Role)]
    return {a.name: verify_one(roles, a) for a in load_assertions(ASSERTIONS)}


def test_issue_examples() -> None:
    results = _results()
    assert results["dbas"].status == "holds"
    assert results["mfa"].status == "holds"
    assert results["pci"].status == "holds"
    prod = results["prod"]
    assert prod.status == "fails" and prod.counterexample is not None
    cx = prod.counterexample
    assert cx.labels["env"] == "prod" and "contractor" in cx.roles
    assert cx.decision is not None and cx.decision.allowed


def _role(name: str, **allow: Any) -> Role:
    return Role(metadata=Metadata(name=name), spec=RoleSpec(allow=RoleConditions(**allow)))


def test_unsupported_constructs_give_unknown_not_holds() -> None:
    everyone = Assertion(name="x", expect="unreachable", resource={"labels": {"env": "prod"}})
    backref = _role("r", logins=["root"], node_labels={"env": "^(p)rod\\1?$"})
    # A back reference: outside the fragment; the replay settles it here (it really matches).
    assert verify_one([backref], everyone).status == "fails"
    lookahead = _role("r", logins=["root"], node_labels={"env": "^(?!prod$).*$"})
    result = verify_one([lookahead], everyone)
    assert result.status == "unknown" and "assert" in result.reason
    source_ip = _role(
        "r",
        logins=["root"],
        node_labels={"env": "prod"},
        where='request.source_ip.matches("^10[.]")',
    )
    result = verify_one([source_ip], everyone)
    assert result.status in ("unknown", "fails")
    if result.status == "unknown":
        assert "matches()" in result.reason


def test_unknown_construct_that_does_not_matter_still_holds() -> None:
    lookahead = _role("r", logins=["root"], node_labels={"env": "^(?!x).*$", "pci": "no"})
    assertion = Assertion(name="x", expect="unreachable", resource={"labels": {"pci": "yes"}})
    assert verify_one([lookahead], assertion).status == "holds"


def test_unknown_role_in_assertion() -> None:
    assertion = Assertion(name="x", expect="unreachable", user={"roles": ["nope"]})
    result = verify_one([_role("r", logins=["root"], node_labels={"*": "*"})], assertion)
    assert result.status == "unknown" and "nope" in result.reason
