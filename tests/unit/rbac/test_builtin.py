"""The built-in roles grant what their documentation says, and nothing more."""

from __future__ import annotations

import itertools
import pkgutil

import pytest

import bastion.rbac
from bastion.rbac import BUILTIN_ROLES, RoleSet, builtin_role
from bastion.types import dump_resource, load_resources
from bastion.types.access import ADMIN_KINDS, VERBS

TRAITS = {"logins": ["alice", "ubuntu"], "db_users": ["reader"], "db_names": ["orders"]}


def test_names() -> None:
    assert set(BUILTIN_ROLES) == {"access", "editor", "auditor"}
    for name, role in BUILTIN_ROLES.items():
        assert role.metadata.name == name
        assert role.metadata.description


def _rules(name: str) -> set[tuple[str, str]]:
    roles = RoleSet.from_roles([BUILTIN_ROLES[name]], TRAITS)
    return {
        (kind, verb)
        for kind, verb in itertools.product(ADMIN_KINDS, VERBS)
        if roles.check_rule(kind, verb).allowed
    }


def test_access_role() -> None:
    roles = RoleSet.from_roles([BUILTIN_ROLES["access"]], TRAITS)
    assert roles.allowed_logins() == ["alice", "ubuntu"]
    assert roles.check_node_access("n", {}, "alice").allowed
    assert roles.check_node_access("n", {"env": "prod"}, "ubuntu").allowed
    assert not roles.check_node_access("n", {}, "root").allowed
    assert roles.check_db_access({"env": "x"}, "reader", "orders").allowed
    assert not roles.check_db_access({}, "postgres", "orders").allowed
    assert not roles.check_db_access({}, "reader", "secrets").allowed
    assert roles.check_app_access({}).allowed
    assert _rules("access") == {("node", "list"), ("node", "read")}


def test_access_role_without_traits_grants_no_logins() -> None:
    roles = RoleSet.from_roles([BUILTIN_ROLES["access"]], {})
    assert roles.allowed_logins() == []
    assert not roles.check_node_access("n", {}, "alice").allowed
    assert roles.check_node_visible("n", {}).allowed


def test_editor_role() -> None:
    editable = {
        "user",
        "role",
        "token",
        "cert_authority",
        "node",
        "proxy",
        "cluster_auth_preference",
        "lock",
        "oidc",
        "saml",
        "github",
        "access_request",
        "device",
        "db",
        "app",
        "trusted_cluster",
        "remote_cluster",
        "risk_rule",
    }
    expected = {(k, v) for k in editable for v in VERBS} | {
        (k, v) for k in ("event", "session") for v in ("list", "read")
    }
    assert _rules("editor") == expected
    roles = RoleSet.from_roles([BUILTIN_ROLES["editor"]], TRAITS)
    assert roles.allowed_logins() == []
    assert not roles.check_node_visible("n", {}).allowed
    assert not roles.check_db_access({}, "reader", "orders").allowed


def test_auditor_role() -> None:
    assert _rules("auditor") == {(k, v) for k in ("event", "session") for v in ("list", "read")}
    assert RoleSet.from_roles([BUILTIN_ROLES["auditor"]], TRAITS).allowed_logins() == []


@pytest.mark.parametrize("name", sorted(BUILTIN_ROLES))
def test_round_trips_through_yaml(name: str) -> None:
    role = BUILTIN_ROLES[name]
    assert load_resources(dump_resource(role)) == [role]


def test_builtin_role_is_a_copy() -> None:
    copy = builtin_role("access")
    copy.spec.allow.logins.append("root")
    assert BUILTIN_ROLES["access"].spec.allow.logins == ["{{internal.logins}}"]
    with pytest.raises(KeyError):
        builtin_role("superuser")


def test_package_exports_match_all() -> None:
    public = {n for n in vars(bastion.rbac) if not n.startswith("_")}
    # submodules become attributes of the package once anything imports them
    submodules = {m.name for m in pkgutil.iter_modules(bastion.rbac.__path__)}
    assert public - submodules == set(bastion.rbac.__all__)
    for name in bastion.rbac.__all__:
        assert getattr(bastion.rbac, name) is not None
