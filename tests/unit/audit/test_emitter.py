from bastion.audit.emitter import Emitter
from bastion.audit.log import AuditLog
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock


async def test_audit_log_is_an_emitter():
    clock = FakeClock()
    emitter: Emitter = AuditLog(MemoryBackend(clock), clock, "c")
    event = await emitter.emit("session.start", user="alice", login="root", pty=True)
    assert event is not None and event.code == "T5000I" and event.fields == {"pty": True}
