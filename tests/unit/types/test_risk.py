from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from bastion.types import load_resources
from bastion.types.risk import DEFAULTS, RULE_TYPES, RiskRule, RiskRuleSpec


def test_a_rule_loads_from_yaml_and_resolves_defaults() -> None:
    (rule,) = load_resources(
        "kind: risk_rule\nmetadata: {name: night-owls}\n"
        "spec: {type: unusual_hour, action: step_up, lock_ttl: 12h, users: ['okta:*']}\n"
    )
    assert isinstance(rule, RiskRule)
    resolved = rule.spec.resolved()
    assert resolved.min_history == 20 and resolved.rare_share == 0.02
    assert resolved.lock_ttl == timedelta(hours=12) and resolved.users == ["okta:*"]
    assert set(DEFAULTS) == set(RULE_TYPES)


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValidationError, match="alert"):
        RiskRuleSpec(type="failed_logins", action="lock")
    with pytest.raises(ValidationError):
        RiskRuleSpec.model_validate({"type": "teleport"})
    with pytest.raises(ValidationError):
        RiskRuleSpec.model_validate({"type": "new_source", "action": "page"})
