from datetime import timedelta

import pytest
from pydantic import ValidationError

from bastion.types.access import LockSpec, LockTarget, Role, RoleOptions, Rule


def test_role_defaults_are_safe():
    opts = RoleOptions()
    assert opts.max_session_ttl == timedelta(hours=12)
    assert opts.forward_agent is False and opts.lock_mode == "best_effort"


def test_label_selector_normalises_to_lists():
    role = Role.model_validate(
        {"metadata": {"name": "r"}, "spec": {"allow": {"node_labels": {"env": "prod"}}}}
    )
    assert role.spec.allow.node_labels == {"env": ["prod"]}


def test_rule_verbs_checked():
    with pytest.raises(ValidationError, match="unknown verb 'destroy'"):
        Rule(resources=["role"], verbs=["destroy"])


def test_lock_target_required():
    with pytest.raises(ValidationError):
        LockSpec(target=LockTarget())
    assert LockSpec(target=LockTarget(user="alice")).target.user == "alice"
