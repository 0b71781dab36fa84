import pytest
from pydantic import ValidationError

from bastion.contract.bots import BOTS_ADD, BOTS_RM, AddBot


def test_bots_contract() -> None:
    assert BOTS_ADD.audience == "user" and BOTS_RM.params == ("name",)
    body = AddBot.model_validate({"name": "ci", "roles": ["access"], "ttl": "2h"})
    assert body.oidc is None
    with pytest.raises(ValidationError, match="https"):
        AddBot.model_validate(
            {"name": "ci", "roles": ["a"], "oidc": {"issuer": "http://x", "audience": "a",
             "allow": [{"sub": "x"}]}}
        )  # fmt: skip
