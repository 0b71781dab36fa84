"""The web UI's contract: the node query's bounds and defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.contract.web import MAX_PER_PAGE, NodeQuery


def test_defaults_and_bounds() -> None:
    assert NodeQuery() == NodeQuery(q="", label="", sort="name", page=1, per_page=50)
    NodeQuery(per_page=MAX_PER_PAGE, sort="-status")
    for bad in ({"per_page": MAX_PER_PAGE + 1}, {"page": 0}, {"sort": "labels"}, {"x": 1}):
        with pytest.raises(ValidationError):
            NodeQuery.model_validate(bad)
