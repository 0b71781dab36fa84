from datetime import timedelta

from bastion.audit.log import AuditLog, AuditQuery
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock


async def test_emit_and_search_filters():
    clock = FakeClock()
    log = AuditLog(MemoryBackend(clock), clock, "c1")
    start = clock.now()
    await log.emit("user.login", user="alice", remote_addr="1.1.1.1", method="password")
    clock.advance(timedelta(minutes=10))
    await log.emit("user.login", outcome="failure", user="bob", reason="wrong password")
    await log.emit("role.create", user="alice", target="role/dev")
    events = await log.search(AuditQuery())
    assert [e.type for e in events] == ["user.login", "user.login", "role.create"]
    assert events[0].fields == {"method": "password"} and events[0].cluster == "c1"
    assert events[1].code == "T1000W" and events[1].reason == "wrong password"
    assert [e.user for e in await log.search(AuditQuery(user="alice"))] == ["alice", "alice"]
    assert len(await log.search(AuditQuery(types=("user.*",)))) == 2
    assert len(await log.search(AuditQuery(since=start + timedelta(minutes=5)))) == 2
    assert len(await log.search(AuditQuery(until=start + timedelta(minutes=5)))) == 1
    assert len(await log.search(AuditQuery(outcome="failure"))) == 1
    assert len(await log.search(AuditQuery(limit=1))) == 1


async def test_ids_are_unique_and_ordered():
    clock = FakeClock()
    log = AuditLog(MemoryBackend(clock), clock, "c1")
    ids = [(await log.emit("x")).id for _ in range(50)]
    assert len(set(ids)) == 50
    assert [e.id for e in await log.search(AuditQuery())] == ids  # append order
