import pytest

from bastion.audit.emitter import Emitter
from bastion.audit.log import AuditLog
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock


async def test_audit_log_is_an_emitter():
    clock = FakeClock()
    emitter: Emitter = AuditLog(MemoryBackend(clock), clock, "c")
    event = await emitter.emit("session.start", user="alice", login="root", pty=True)
    assert event is not None and event.code == "T5000I" and event.fields == {"pty": True}


async def test_session_events_through_any_emitter_and_how_many_were_stored() -> None:
    """The audit log: its bulk writer; an emitter with only ``emit`` (a proxy in its own
    process): one each, and after a failure ``stored`` counts those that went before it."""
    from bastion.audit.emitter import SessionEvents
    from bastion.audit.log import AuditLog
    from bastion.backend.memory import MemoryBackend
    from bastion.clock import FakeClock
    from bastion.errors import ConnectionProblem

    clock = FakeClock()
    log = AuditLog(MemoryBackend(clock), clock, "c1")
    events = SessionEvents(log, "db.session.query", {"user": "alice", "db_name": "d"})
    await events.append([{"query": "select 1"}, {"query": "select 2"}])
    assert events.stored == 2
    stored = await log.read_from(0, 10)
    assert [(e.user, e.fields["db_name"], e.fields["query"]) for e in stored] == [
        ("alice", "d", "select 1"),
        ("alice", "d", "select 2"),
    ]

    class OneByOne:
        def __init__(self) -> None:
            self.got: list[dict[str, object]] = []

        async def emit(self, event_type: str, *, outcome: str = "success", **f: object) -> None:
            if len(self.got) == 2:
                raise ConnectionProblem("auth unreachable")
            self.got.append({"type": event_type, **f})

    sink = OneByOne()
    events = SessionEvents(sink, "app.request", {"user": "bob"})  # type: ignore[arg-type]
    with pytest.raises(ConnectionProblem):
        await events.append([{"n": 1}, {"n": 2}, {"n": 3}])
    assert events.stored == 2 and sink.got == [
        {"type": "app.request", "user": "bob", "n": 1},
        {"type": "app.request", "user": "bob", "n": 2},
    ]
