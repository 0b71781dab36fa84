"""Per-session MFA for leaf nodes (issue 23): the scope a root signs and what a leaf accepts.

Pure: :func:`bastion.auth.trust.leaf_session_scope`, :func:`leaf_scope_target` and
:func:`leaf_session_mfa`. A scope for another leaf, node or login never counts as MFA.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.auth.trust import leaf_scope_target, leaf_session_mfa, leaf_session_scope
from bastion.types.identity import Identity, RouteToTarget

NAME = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._@+-]{0,20}\Z")
LEAF = "leaf.test"


def _session(leaf: str, node: str, login: str, **update: object) -> Identity:
    base = Identity(
        cluster="root.test",
        user="alice",
        kind="user",
        roles=("access",),
        logins=(login,),
        expires=datetime(2030, 1, 1, tzinfo=UTC),
        route=RouteToTarget(cluster=leaf, node=node, login=login),
        mfa_verified=True,
        mfa_scope=leaf_session_scope(leaf, node, login),
        mfa_device="dev1",
    )
    return base.model_copy(update=update)


@given(NAME, NAME, NAME)
def test_scope_round_trips_for_its_leaf_only(leaf: str, node: str, login: str) -> None:
    scope = leaf_session_scope(leaf, node, login)
    assert leaf_scope_target(scope, leaf) == (node, login)
    assert leaf_scope_target(scope, leaf + "x") is None
    assert leaf_scope_target(f"session:{node}:{login}", leaf) is None  # a root-node scope


@given(NAME, NAME, NAME, NAME, NAME, NAME)
def test_a_scope_for_another_target_never_counts(
    leaf: str, node: str, login: str, other_leaf: str, other_node: str, other_login: str
) -> None:
    logins = (login, other_login)
    got = leaf_session_mfa(_session(other_leaf, other_node, other_login), leaf, logins)
    same = (other_leaf, other_node, other_login) == (leaf, node, login)
    if other_leaf != leaf:
        assert got["mfa_verified"] is False and got["mfa_scope"] == ""
    if not same:
        assert got.get("mfa_scope") != f"session:{node}:{login}"
    # The route must agree with the scope: a scope for this target with another route fails.
    mixed = _session(leaf, node, login).model_copy(
        update={"route": RouteToTarget(cluster=other_leaf, node=other_node, login=login)}
    )
    verdict = leaf_session_mfa(mixed, leaf, logins)
    assert verdict["mfa_verified"] is ((other_leaf, other_node) == (leaf, node))


def test_the_exact_target_becomes_the_leaf_local_session() -> None:
    got = leaf_session_mfa(_session(LEAF, "web1", "root"), LEAF, ("root", "ubuntu"))
    assert got["mfa_verified"] is True and got["mfa_scope"] == "session:web1:root"
    assert got["logins"] == ("root",) and got["mfa_device"] == "dev1"
    assert got["route"] == RouteToTarget(cluster=LEAF, node="web1", login="root")


@pytest.mark.parametrize(
    "update",
    [
        {"mfa_verified": False},
        {"logins": ("root", "ubuntu")},
        {"route": None},
        {"mfa_scope": "session:leaf.test/web1"},  # malformed
        {"mfa_scope": "session:web1:root"},  # a root node's scope
    ],
)
def test_malformed_or_mismatched_session_is_no_mfa(update: dict[str, object]) -> None:
    got = leaf_session_mfa(_session(LEAF, "web1", "root", **update), LEAF, ("root",))
    assert got == {"mfa_verified": False, "mfa_scope": "", "mfa_device": ""}


def test_a_login_the_leaf_does_not_allow_is_no_mfa() -> None:
    got = leaf_session_mfa(_session(LEAF, "web1", "root"), LEAF, ("ubuntu",))
    assert got["mfa_verified"] is False


def test_an_ordinary_certificate_keeps_its_fields() -> None:
    plain = _session(LEAF, "web1", "root").model_copy(
        update={"mfa_scope": "", "mfa_verified": False, "route": None}
    )
    assert leaf_session_mfa(plain, LEAF, ("root",)) == {
        "mfa_verified": False,
        "mfa_scope": "",
        "mfa_device": "dev1",
    }


@pytest.mark.parametrize(("leaf", "node"), [("", "n"), ("l", ""), ("a/b", "n"), ("l", "a/b")])
def test_unscopable_names_are_refused(leaf: str, node: str) -> None:
    with pytest.raises(ValueError):
        leaf_session_scope(leaf, node, "root")
