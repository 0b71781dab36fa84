from __future__ import annotations

import pytest

from bastion.errors import BadParameter
from bastion.rbac.checker import RoleSet
from bastion.rbac.db_provision import check_db_identifier, provisioned_roles, with_db_user
from bastion.types.access import Role, RoleConditions, RoleOptions, RoleSpec
from bastion.types.meta import Metadata


def _role(name: str, create: bool, labels: dict[str, list[str]], grants: list[str]) -> Role:
    return Role(
        metadata=Metadata(name=name),
        spec=RoleSpec(
            options=RoleOptions(create_db_user=create),
            allow=RoleConditions(db_labels=labels, db_names=["*"], db_roles=grants),
        ),
    )


def test_only_roles_that_allow_the_database_provision() -> None:
    roles = [
        _role("a", True, {"env": ["dev"]}, ["reader", "{{external.extra}}"]),
        _role("b", True, {"env": ["prod"]}, ["writer"]),
        _role("c", False, {"env": ["dev"]}, ["admin"]),
    ]
    traits = {"extra": ["auditor"]}
    assert provisioned_roles(roles, traits, {"env": "dev"}) == ("auditor", "reader")
    assert provisioned_roles(roles, traits, {"env": "qa"}) is None
    assert provisioned_roles(roles[2:], traits, {"env": "dev"}) is None


def test_unsafe_names_refused_in_one_line() -> None:
    assert check_db_identifier("alice@example.com") == "alice@example.com"
    for bad in ("", "a" * 64, 'x"; drop', "-x", "a b"):
        with pytest.raises(BadParameter) as info:
            check_db_identifier(bad)
        assert "\n" not in info.value.message
    with pytest.raises(BadParameter):
        provisioned_roles([_role("a", True, {"*": ["*"]}, ["re'ader"])], {}, {})


def test_the_user_name_becomes_an_allowed_db_user() -> None:
    roles = with_db_user([_role("a", True, {"*": ["*"]}, [])], "bob")
    decision = RoleSet.from_roles(roles, {}).check_db_access({}, "bob", "postgres")
    assert decision.allowed
    assert not RoleSet.from_roles(roles, {}).check_db_access({}, "carol", "postgres").allowed
