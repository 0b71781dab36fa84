from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from bastion.config.risk import RiskConfig


def test_defaults_and_durations() -> None:
    config = RiskConfig.model_validate(
        {"failed_logins": {"threshold": 3, "window": "2m", "lock_ttl": "1h"}}
    )
    assert config.failed_logins.window == timedelta(minutes=2)
    assert config.failed_logins.lock_ttl == timedelta(hours=1)
    assert RiskConfig().denied_burst.threshold == 20 and RiskConfig().enabled
    with pytest.raises(ValidationError):
        RiskConfig.model_validate({"failed_logins": {"threshold": 0}})
