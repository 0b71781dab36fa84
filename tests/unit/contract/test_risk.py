from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.contract.risk import RISK_RULES, RISK_TEST, RiskTest


def test_risk_endpoints_are_for_users() -> None:
    assert RISK_RULES.audience == RISK_TEST.audience == "user"
    assert RiskTest().since_seconds == 86_400
    with pytest.raises(ValidationError):
        RiskTest(since_seconds=0)
