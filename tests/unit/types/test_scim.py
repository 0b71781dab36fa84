from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.types.scim import ScimProblem, ScimUser


def test_models() -> None:
    user = ScimUser.model_validate(
        {"metadata": {"name": "abc"}, "spec": {"connector": "okta", "user_name": "a"}}
    )
    assert user.spec.active and user.kind == "scim_user"
    with pytest.raises(ValidationError):
        ScimUser.model_validate({"metadata": {"name": "abc"}, "spec": {"connector": "okta"}})
    problem = ScimProblem("x", 409, "uniqueness")
    assert (problem.status, problem.scim_type, problem.message) == (409, "uniqueness", "x")
