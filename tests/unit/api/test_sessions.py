"""A tracker becomes the reply ``bsh sessions ls`` prints."""

from __future__ import annotations

from bastion.api.sessions import session_info
from bastion.types.meta import Metadata
from bastion.types.sessions import SessionParticipant, SessionTracker, SessionTrackerSpec


def test_session_info() -> None:
    t = SessionTracker(
        metadata=Metadata(name="s1"),
        spec=SessionTrackerSpec(
            node="web1", owner="alice", state="pending", waiting_for=["role prod: 1 more"],
            participants=[SessionParticipant(user="alice", mode="owner")],
        ),
    )  # fmt: skip
    info = session_info((t, ("moderator",)))
    assert (info.id, info.state, info.join_modes) == ("s1", "pending", ["moderator"])
    assert info.participants[0].mode == "owner"
