"""Access-explained endpoints: the queries name what they need."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.contract.access import CheckQuery, TargetQuery


def test_required_parameters() -> None:
    with pytest.raises(ValidationError, match="login"):
        CheckQuery.model_validate({"user": "a", "node": "n"})
    assert TargetQuery(node="n", login="root").at == ""
