"""The tracker store keeps trackers under their own (unaudited) prefix."""

from __future__ import annotations

from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.services.sessions import SESSION_TRACKERS_PREFIX, tracker_store
from bastion.services.store import audited_prefixes
from bastion.types.meta import Metadata
from bastion.types.sessions import SessionTracker, SessionTrackerSpec


async def test_round_trip_outside_the_audited_prefixes() -> None:
    store = tracker_store(MemoryBackend(FakeClock(), sweep_interval=None))
    t = SessionTracker(metadata=Metadata(name="s1"),
                       spec=SessionTrackerSpec(node="n", owner="alice"))  # fmt: skip
    await store.upsert(t)
    assert (await store.get("s1")).spec.owner == "alice"
    assert not any(p.startswith(SESSION_TRACKERS_PREFIX) for p in audited_prefixes())
