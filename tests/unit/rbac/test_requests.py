"""The pure access request rules: asking, thresholds, deny wins, reviewer rights."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import BadParameter
from bastion.rbac.checker import RoleSet
from bastion.rbac.requests import (
    RequestRefused,
    RequestRights,
    ReviewRefused,
    ReviewRights,
    apply_review,
    new_request_spec,
    roles_for_resources,
    tally,
)
from bastion.types.access import Role
from bastion.types.meta import Metadata
from bastion.types.requests import AccessRequest, AccessReview

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def role(name: str, **allow: Any) -> Role:
    deny = allow.pop("deny", {})
    return Role.model_validate({"metadata": {"name": name}, "spec": {"allow": allow, "deny": deny}})


REQUESTER = role(
    "dev",
    request={
        "roles": ["dba"],
        "search_as_roles": ["prod-reader"],
        "thresholds": [{"approve": 2, "deny": 1}],
        "max_duration": "4h",
        "suggested_reviewers": ["carol"],
    },
)
REVIEWER = role("lead", review_requests={"roles": ["dba", "prod-reader"]})
PROD_READER = role("prod-reader", logins=["x"], node_labels={"env": "prod"})


def request(**kw: Any) -> AccessRequest:
    spec = new_request_spec(
        RequestRights.of([REQUESTER]),
        user=kw.pop("user", "alice"),
        roles=kw.pop("roles", ["dba"]),
        now=NOW,
        **kw,
    )
    return AccessRequest(metadata=Metadata(name="r1"), spec=spec)


def review(
    author: str, verdict: str = "approve", roles: tuple[str, ...] = ("lead",)
) -> AccessReview:
    return AccessReview.model_validate(
        {"author": author, "verdict": verdict, "created": NOW, "author_roles": list(roles)}
    )


RIGHTS = ReviewRights.of([REVIEWER])


def test_new_request_snapshots_thresholds_and_caps_the_duration() -> None:
    req = request(duration=timedelta(hours=10))
    assert req.spec.state == "PENDING"
    assert req.spec.access_expires == NOW + timedelta(hours=4)
    assert req.spec.pending_expires == NOW + timedelta(hours=1)
    assert [t.approve for t in req.spec.thresholds] == [2]
    assert req.spec.role_thresholds == {"dba": [0]}
    assert req.spec.suggested_reviewers == ["carol"]


def test_asking_for_a_role_not_listed_is_refused() -> None:
    with pytest.raises(RequestRefused, match="admin"):
        request(roles=["admin"])
    with pytest.raises(BadParameter):
        request(roles=[])


def test_deny_request_roles_wins() -> None:
    denier = role("no-dba", deny={"request": {"roles": ["dba"]}})
    with pytest.raises(RequestRefused, match="denies"):
        new_request_spec(RequestRights.of([REQUESTER, denier]), user="a", roles=["dba"], now=NOW)


def test_two_approvals_approve() -> None:
    req = request()
    spec = apply_review(req, review("bob"), RIGHTS, NOW)
    assert spec.state == "PENDING"
    req = req.model_copy(update={"spec": spec})
    spec = apply_review(req, review("carol"), RIGHTS, NOW)
    assert spec.state == "APPROVED" and spec.resolved == NOW


def test_self_review_duplicate_and_no_rights_are_refused() -> None:
    req = request()
    with pytest.raises(ReviewRefused, match="own"):
        apply_review(req, review("alice"), RIGHTS, NOW)
    once = req.model_copy(update={"spec": apply_review(req, review("bob"), RIGHTS, NOW)})
    with pytest.raises(ReviewRefused, match="already"):
        apply_review(once, review("bob"), RIGHTS, NOW)
    with pytest.raises(ReviewRefused, match="may not review"):
        apply_review(req, review("eve", roles=("dev",)), ReviewRights.of([REQUESTER]), NOW)


def test_review_where_and_deny_review() -> None:
    only_carol = role("l2", review_requests={"roles": ["*"], "where": 'reviewer.name == "carol"'})
    req = request()
    with pytest.raises(ReviewRefused):
        apply_review(req, review("bob"), ReviewRights.of([only_carol]), NOW)
    assert apply_review(req, review("carol"), ReviewRights.of([only_carol]), NOW)
    blocked = role("nodba", deny={"review_requests": {"roles": ["dba"]}})
    with pytest.raises(ReviewRefused, match="denies"):
        apply_review(req, review("carol"), ReviewRights.of([REVIEWER, blocked]), NOW)


def test_expired_requests_take_no_reviews() -> None:
    req = request()
    assert req.state_at(NOW + timedelta(hours=1)) == "EXPIRED"
    with pytest.raises(ReviewRefused, match="expired"):
        apply_review(req, review("bob"), RIGHTS, NOW + timedelta(hours=2))


def test_threshold_filter_counts_only_matching_reviewers() -> None:
    requester = role(
        "dev",
        request={
            "roles": ["dba"],
            "thresholds": [{"approve": 1, "deny": 1, "filter": '"dba-lead" in reviewer.roles'}],
        },
    )
    spec = new_request_spec(RequestRights.of([requester]), user="a", roles=["dba"], now=NOW)
    req = AccessRequest(metadata=Metadata(name="r"), spec=spec)
    after = apply_review(req, review("bob", roles=("lead",)), RIGHTS, NOW)
    assert after.state == "PENDING"  # bob's role does not match the filter
    after = apply_review(req, review("carol", roles=("lead", "dba-lead")), RIGHTS, NOW)
    assert after.state == "APPROVED"


def test_resource_requests_pick_the_search_roles_that_show_the_node() -> None:
    other = role("staging-reader", logins=["x"], node_labels={"env": "staging"})
    found = roles_for_resources([PROD_READER, other], {}, {"node/db7": {"env": "prod"}})
    assert found == ["prod-reader"]
    with pytest.raises(RequestRefused, match="not found"):
        roles_for_resources([other], {}, {"node/db7": {"env": "prod"}})
    spec = new_request_spec(
        RequestRights.of([REQUESTER]), user="a", roles=found, resources=["node/db7"], now=NOW
    )
    assert spec.resources == ["node/db7"] and spec.roles == ["prod-reader"]


# ---- properties -----------------------------------------------------------------------------

REVIEWERS = [f"r{i}" for i in range(6)]
reviews_strategy = st.lists(
    st.tuples(st.sampled_from(REVIEWERS), st.sampled_from(["approve", "deny"])),
    max_size=10,
)


def _threshold_request(approve: int, deny: int) -> AccessRequest:
    requester = role(
        "dev", request={"roles": ["dba"], "thresholds": [{"approve": approve, "deny": deny}]}
    )
    spec = new_request_spec(RequestRights.of([requester]), user="alice", roles=["dba"], now=NOW)
    return AccessRequest(metadata=Metadata(name="r"), spec=spec)


def _run(req: AccessRequest, seq: list[tuple[str, str]]) -> tuple[AccessRequest, list[str]]:
    """Apply reviews in order; returns the final request and the states seen."""
    states = [req.spec.state]
    for author, verdict in seq:
        try:
            spec = apply_review(req, review(author, verdict), RIGHTS, NOW)
        except ReviewRefused:
            continue
        req = req.model_copy(update={"spec": spec})
        states.append(spec.state)
    return req, states


@given(st.integers(1, 3), st.integers(1, 3), reviews_strategy)
def test_states_follow_the_thresholds_and_deny_wins(
    approve: int, deny: int, seq: list[tuple[str, str]]
) -> None:
    req, states = _run(_threshold_request(approve, deny), seq)
    # Once resolved, never changes again (no more reviews are taken).
    first = next((i for i, s in enumerate(states) if s != "PENDING"), None)
    if first is not None:
        assert len(states) == first + 1
    accepted = req.spec.reviews
    approvals = sum(r.verdict == "approve" for r in accepted)
    denials = sum(r.verdict == "deny" for r in accepted)
    assert len({r.author for r in accepted}) == len(accepted)  # one review per person
    if denials >= deny:
        assert req.spec.state == "DENIED"
    elif approvals >= approve:
        assert req.spec.state == "APPROVED"
    else:
        assert req.spec.state == "PENDING"
    # the tally agrees with the stored state
    assert tally(req.spec) == req.spec.state


@given(reviews_strategy, st.integers(1, 3))
def test_deny_wins_whatever_the_approvals(seq: list[tuple[str, str]], approve: int) -> None:
    """Enough denials give DENIED even when approvals are also enough (tally is order-free)."""
    req = _threshold_request(approve, 1)
    reviews = [review(a, v) for a, v in dict(seq).items()]
    spec = req.spec.model_copy(update={"reviews": reviews})
    if any(r.verdict == "deny" for r in reviews):
        assert tally(spec) == "DENIED"


@given(st.sampled_from(REVIEWERS + ["alice"]), st.sampled_from(["approve", "deny"]))
def test_self_review_is_always_refused(author: str, verdict: str) -> None:
    req = _threshold_request(1, 1).model_copy(deep=True)
    req.spec.user = author
    with pytest.raises(ReviewRefused, match="own"):
        apply_review(req, review(author, verdict), RIGHTS, NOW)


@given(st.lists(st.sampled_from(["dba", "web", "ops"]), min_size=1, max_size=3, unique=True))
def test_a_reviewer_needs_rights_for_every_role(roles: list[str]) -> None:
    requester = role("dev", request={"roles": ["*"]})
    spec = new_request_spec(RequestRights.of([requester]), user="alice", roles=roles, now=NOW)
    req = AccessRequest(metadata=Metadata(name="r"), spec=spec)
    partial = ReviewRights.of([role("p", review_requests={"roles": ["dba", "web"]})])
    ok = set(roles) <= {"dba", "web"}
    if ok:
        assert apply_review(req, review("bob"), partial, NOW).state == "APPROVED"
    else:
        with pytest.raises(ReviewRefused):
            apply_review(req, review("bob"), partial, NOW)


# ---- resource requests for databases and apps -----------------------------------------------

PROD_DB = role(
    "prod-db", db_labels={"env": "prod"}, db_users=["reader"], db_names=["orders", "billing"]
)
PROD_APP = role("prod-app", app_labels={"env": "prod"})


def test_db_and_app_requests_pick_the_search_roles_by_their_kind_labels() -> None:
    search = [PROD_READER, PROD_DB, PROD_APP]
    assert roles_for_resources(search, {}, {"db/orders": {"env": "prod"}}) == ["prod-db"]
    assert roles_for_resources(search, {}, {"app/grafana": {"env": "prod"}}) == ["prod-app"]
    # node_labels show nodes only: a node search role does not reveal a database
    with pytest.raises(RequestRefused, match="db 'orders' not found"):
        roles_for_resources([PROD_READER], {}, {"db/orders": {"env": "prod"}})
    hidden = role("no-pii", db_labels={"env": "prod"}, deny={"db_labels": {"pii": "yes"}})
    with pytest.raises(RequestRefused, match="not found"):
        roles_for_resources([hidden], {}, {"db/users": {"env": "prod", "pii": "yes"}})


def test_unknown_kinds_are_refused_as_malformed() -> None:
    with pytest.raises(ValueError, match="only node, db, app"):
        roles_for_resources([PROD_DB], {}, {"pod/x": {}})


DB_NAMES = ["orders", "billing", "users", "audit"]


@given(
    st.lists(st.sampled_from(DB_NAMES), min_size=1, max_size=3, unique=True),
    st.sampled_from(DB_NAMES),
    st.sampled_from(["reader", "admin"]),
    st.sampled_from(["orders", "billing", "secrets"]),
)
def test_a_db_request_admits_exactly_its_databases_with_the_search_roles_grants(
    granted: list[str], db: str, db_user: str, db_name: str
) -> None:
    """With ``allowed_resources`` from a db request, a database is reachable iff it was
    requested and the search role's db_users/db_names allow the login; node and app requests
    in the same certificate do not widen it."""
    allowed = [f"db/{n}" for n in granted] + ["node/other"]
    rs = RoleSet.from_roles([PROD_DB, PROD_READER, PROD_APP], {}, allowed)
    decision = rs.check_db_access({"env": "prod"}, db_user, db_name, db_service=db)
    expected = db in granted and db_user == "reader" and db_name in ("orders", "billing")
    assert decision.allowed == expected
    if db not in granted:
        assert "access request grants only" in decision.reason
    assert rs.check_resource_visible("db", db, {"env": "prod"}).allowed == (db in granted)
    assert not rs.check_app_access({"env": "prod"}, app_name="grafana").allowed


@given(st.sampled_from(["grafana", "kibana"]), st.booleans())
def test_an_app_request_admits_exactly_its_app(app: str, limited: bool) -> None:
    rs = RoleSet.from_roles([PROD_APP], {}, ["app/grafana"] if limited else [])
    allowed = rs.check_app_access({"env": "prod"}, app_name=app).allowed
    assert allowed == (not limited or app == "grafana")
