"""Agent endpoints: event results, watch lines."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.contract.agents import WATCH, Submitted, WatchLine


def test_event_results_and_watch_lines() -> None:
    done = Submitted.model_validate(
        {"accepted": 1, "results": [{"event_id": "e1", "status": "rejected", "reason": "bad"}]}
    )
    assert done.results[0].reason == "bad"
    with pytest.raises(ValidationError):
        WatchLine.model_validate({"type": "explode"})
    assert WATCH.stream == "application/x-ndjson" and WATCH.audience == "any"
