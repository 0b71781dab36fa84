"""MFA for admin actions: which requests, who, and the scope binding (pure parts).

The ceremony itself (challenge, assertion, replay) runs through the real daemon in
tests/integration/test_sessionmfa.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.api.admin_mfa import admin_mfa_required, admin_scope, is_admin_change
from bastion.types.identity import Identity

EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    ("method", "path", "admin"),
    [
        ("POST", "/v1/resources/role", True),
        ("PUT", "/v1/resources/role/dev", True),
        ("DELETE", "/v1/resources/lock/l1", True),
        ("PUT", "/v1/resources/cluster_auth_preference/cluster-auth-preference", True),
        ("POST", "/v1/resources/oidc", True),
        ("POST", "/v1/users", True),
        ("PATCH", "/v1/users/alice", True),
        ("POST", "/v1/users/alice/reset", True),
        ("POST", "/v1/tokens", True),
        ("POST", "/v1/ca/rotate", True),
        ("POST", "/v1/ca/sign-host", True),
        ("post", "/v1/connectors/github", True),
        ("GET", "/v1/resources/role", False),
        ("GET", "/v1/ca/export", False),
        ("HEAD", "/v1/users", False),
        ("POST", "/v1/login", False),
        ("POST", "/v1/certs/session", False),
        ("POST", "/v1/usersX", False),
        ("POST", "/v1/resourcesX/role", False),
        ("POST", "/v1/agents/heartbeat", False),
    ],
)
def test_is_admin_change(method: str, path: str, admin: bool) -> None:
    assert is_admin_change(method, path) is admin


def ident(kind: Any = "user") -> Identity:
    return Identity(cluster="c", user="alice", kind=kind, expires=datetime(2030, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("setting", "kind", "has_device", "required"),
    [
        (None, "user", True, True),  # the default: whoever has a security key
        (None, "user", False, False),
        (None, "bot", False, False),
        (True, "user", False, True),  # strict: everyone (no key: no admin changes)
        (True, "bot", False, True),
        (False, "user", True, False),
        (True, "admin", True, False),  # local admin identity of the auth host: exempt
        (None, "admin", True, False),
        (True, "host", False, False),  # agents
    ],
)
def test_admin_mfa_required(
    setting: bool | None, kind: str, has_device: bool, required: bool
) -> None:
    assert admin_mfa_required(setting, ident(kind), has_device) is required


def test_scope_binds_method_path_query_and_body() -> None:
    base = admin_scope("put", "/v1/resources/role/dev", [], b"")
    assert base == f"admin:PUT /v1/resources/role/dev {EMPTY_SHA}"
    others = {
        admin_scope("POST", "/v1/resources/role/dev", [], b""),
        admin_scope("PUT", "/v1/resources/role/ops", [], b""),
        admin_scope("PUT", "/v1/resources/role/dev", [("force", "true")], b""),
        admin_scope("PUT", "/v1/resources/role/dev", [], b"{}"),
    }
    assert base not in others and len(others) == 4


def test_scope_query_order_does_not_matter() -> None:
    a = admin_scope("POST", "/v1/x", [("a", "1"), ("b", "2")], b"")
    assert a == admin_scope("POST", "/v1/x", [("b", "2"), ("a", "1")], b"")
    assert a.startswith("admin:POST /v1/x?a=1&b=2 ")


def test_scope_keeps_the_order_of_repeated_query_keys() -> None:
    """Security review: handlers read the first value of a repeated key (``?force=``), so two
    orders of the same values are two different requests and must get two scopes."""
    a = admin_scope("POST", "/v1/resources/role", [("force", "false"), ("force", "true")], b"")
    b = admin_scope("POST", "/v1/resources/role", [("force", "true"), ("force", "false")], b"")
    assert a != b


_request = st.tuples(
    st.sampled_from(["POST", "PUT", "DELETE"]),
    st.sampled_from(["/v1/resources/role", "/v1/resources/role/dev", "/v1/users"]),
    st.lists(
        st.tuples(st.sampled_from(["force", "x"]), st.sampled_from(["true", "1"])), max_size=1
    ),
    st.binary(max_size=8),
)


@given(_request, _request)
def test_scope_differs_whenever_the_request_differs(
    a: tuple[str, str, list[tuple[str, str]], bytes],
    b: tuple[str, str, list[tuple[str, str]], bytes],
) -> None:
    assert (admin_scope(*a) == admin_scope(*b)) is (a == b)


def test_only_callers_who_may_change_something_are_asked_for_the_key() -> None:
    """A user with read-only rights gets "access denied" from the handler straight away, not
    a key touch first; anyone with any write right is asked on every admin change."""
    from bastion.api.admin_mfa import may_change_anything
    from bastion.rbac.builtin import BUILTIN_ROLES
    from bastion.rbac.checker import RoleSet
    from bastion.types.access import Role

    roles = BUILTIN_ROLES
    assert not may_change_anything(RoleSet.from_roles([roles["access"]], {}))
    assert not may_change_anything(RoleSet.from_roles([roles["auditor"]], {}))
    assert may_change_anything(RoleSet.from_roles([roles["editor"]], {}))
    lock_only = Role.model_validate(
        {
            "kind": "role",
            "metadata": {"name": "locker"},
            "spec": {"allow": {"rules": [{"resources": ["lock"], "verbs": ["create"]}]}},
        }
    )
    assert may_change_anything(RoleSet.from_roles([lock_only], {}))
