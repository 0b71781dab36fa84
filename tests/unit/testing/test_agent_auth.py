"""The in-process stand-in for auth that agent tests share."""

from __future__ import annotations

import pytest

from bastion.contract.agents import SUBMIT_EVENTS, EventBatch
from bastion.errors import ConnectionProblem
from bastion.testing.agent_auth import InProcessAuth, node_guard


async def test_it_stores_through_a_real_guard_and_simulates_an_outage() -> None:
    _, guard = await node_guard()
    auth = InProcessAuth(guard)
    event = {"type": "session.start", "user": "alice", "session_id": "s1"}
    answer = await auth.send(SUBMIT_EVENTS, EventBatch(events=[event]))
    assert answer.results[0].status == "stored" and auth.calls == [1]
    auth.down = True
    with pytest.raises(ConnectionProblem):
        await auth.send(SUBMIT_EVENTS, EventBatch(events=[event]))
