from datetime import timedelta

import pytest
from pydantic import ValidationError

from bastion.contract.renew import BOT_JOIN, RENEW, BotJoin, Renew


def test_renew_contract() -> None:
    assert RENEW.audience == "any" and BOT_JOIN.audience == "public"
    assert Renew.model_validate({"public_key": "k", "ttl": "30m"}).ttl == timedelta(minutes=30)
    assert BotJoin.model_validate({"public_key": "k"}).ttl == timedelta(hours=1)
    with pytest.raises(ValidationError):
        Renew.model_validate({"public_key": "k", "roles": ["admin"]})  # nothing to widen with
