"""The moderated-session role fields are checked when a role is written."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.types.access import Role
from bastion.types.sessions import JoinSessionsRule, SessionRequirePolicy


def test_defaults_and_role_fields() -> None:
    policy = SessionRequirePolicy()
    assert (policy.kinds, policy.modes, policy.count, policy.on_leave) == (
        ["ssh"], ["moderator"], 1, "terminate"
    )  # fmt: skip
    assert JoinSessionsRule(roles=["*"]).modes == ["observer"]
    role = Role.model_validate({"metadata": {"name": "r"}, "spec": {
        "options": {"require_session_join": [{"filter": '"sre" in user.roles', "count": 2}]},
        "allow": {"join_sessions": [{"roles": ["prod"], "modes": ["peer"]}]},
    }})  # fmt: skip
    assert role.spec.options.require_session_join[0].count == 2
    assert role.spec.allow.join_sessions[0].modes == ["peer"]


@pytest.mark.parametrize(
    "bad",
    [{"filter": "request.user == 'x'"}, {"filter": "user.email == 'x'"}, {"filter": "("},
     {"modes": ["owner"]}, {"kinds": ["k8s"]}, {"on_leave": "ignore"}],
)  # fmt: skip
def test_bad_policies(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SessionRequirePolicy.model_validate(bad)


def test_a_join_rule_names_roles() -> None:
    with pytest.raises(ValidationError):
        JoinSessionsRule(roles=[])
