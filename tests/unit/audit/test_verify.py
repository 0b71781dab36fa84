"""verify over a memory backend: a clean log passes; each tampering is found and named."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.audit.checkpointer import Checkpointer
from bastion.audit.log import AuditLog, event_key
from bastion.audit.signer import load_or_create_signer
from bastion.audit.tree import STATE_KEY, chunk_key
from bastion.audit.verify import verify_log
from bastion.audit.witness import FileWitness
from bastion.backend.base import Item
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock

KEK = bytes(range(32))


async def make(tmp_path, n: int = 30):
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    signer = await load_or_create_signer(backend, KEK, "c1", clock)
    witness = FileWitness(str(tmp_path / "witness" / "checkpoint"))
    cp = Checkpointer(log, signer, clock, witness)
    events = [await log.emit("user.login", user=f"u{i}") for i in range(n)]
    note = await cp.checkpoint()
    return backend, log, signer, cp, events, note, witness


async def run_verify(log, signer, witness):
    external = []
    note = await witness.fetch()
    if note:
        external.append(("witness", note))
    return await verify_log(log, signer.verifier(), external)


async def test_clean_log_verifies_and_grows(tmp_path):
    backend, log, signer, cp, events, note, witness = await make(tmp_path, 2500)
    assert note.startswith("c1/audit\n2500\n")
    report = await run_verify(log, signer, witness)
    assert report.ok, report.findings
    assert report.verified == 2500 and report.events == 2500
    await log.emit("exec")
    report = await run_verify(log, signer, witness)
    assert report.ok and any("not signed yet" in n for n in report.notes)
    note2 = await cp.checkpoint()
    assert note2.split("\n")[1] == "2501"
    assert await cp.checkpoint() == note2  # nothing new: same checkpoint
    report = await verify_log(log, signer.verifier(), [("old checkpoint file", note)])
    assert report.ok and any("consistency proof" in n for n in report.notes)


async def test_modified_event_is_named(tmp_path):
    backend, log, signer, cp, events, note, witness = await make(tmp_path)
    item = await backend.get(event_key(7))
    await backend.put(Item(item.key, item.value.replace(b'"u7"', b'"mallory"')))
    report = await run_verify(log, signer, witness)
    assert not report.ok
    f = report.findings[0]
    assert (f.kind, f.index, f.event_id, f.event_type) == (
        "modified",
        7,
        events[7].id,
        "user.login",
    )


async def test_deleted_event_is_named(tmp_path):
    backend, log, signer, cp, events, note, witness = await make(tmp_path)
    await backend.delete(event_key(12))
    f = (await run_verify(log, signer, witness)).findings[0]
    assert (f.kind, f.index, f.event_id) == ("deleted", 12, events[12].id)


async def test_reordered_events_are_named(tmp_path):
    backend, log, signer, cp, events, note, witness = await make(tmp_path)
    a, b = await backend.get(event_key(3)), await backend.get(event_key(4))
    await backend.put(Item(a.key, b.value))
    await backend.put(Item(b.key, a.value))
    found = (await run_verify(log, signer, witness)).findings
    assert {(f.kind, f.event_id) for f in found} == {
        ("reordered", events[3].id),
        ("reordered", events[4].id),
    }


async def test_inserted_event_is_named(tmp_path):
    backend, log, signer, cp, events, note, witness = await make(tmp_path, 10)
    # Shift events 5..9 up by one and slip a forged one in at 5.
    for i in range(9, 4, -1):
        item = await backend.get(event_key(i))
        await backend.put(Item(event_key(i + 1), item.value))
    forged = json.loads((await backend.get(event_key(5))).value)
    forged.update(id="forged-1", user="alice")
    await backend.put(Item(event_key(5), json.dumps(forged).encode()))
    found = (await run_verify(log, signer, witness)).findings
    assert (found[0].kind, found[0].index, found[0].event_id) == ("inserted", 5, "forged-1")


async def test_rewritten_leaf_records_and_state_are_still_caught(tmp_path):
    backend, log, signer, cp, events, note, witness = await make(tmp_path)
    item = await backend.get(event_key(2))
    await backend.put(Item(item.key, item.value.replace(b'"u2"', b'"x"')))
    await backend.delete(chunk_key(0))
    await backend.delete(STATE_KEY)
    await backend.delete_range("audit/checkpoints/")
    report = await run_verify(log, signer, witness)  # only the witness copy is left
    assert not report.ok
    assert "index 0..29" in report.findings[0].message


async def test_checkpoint_from_another_key_is_refused(tmp_path):
    backend, log, signer, cp, events, note, witness = await make(tmp_path)
    other_backend = MemoryBackend(FakeClock())
    other = await load_or_create_signer(other_backend, KEK, "c1", FakeClock())
    forged = other.sign(note.split("\n\n")[0] + "\n")
    report = await verify_log(log, signer.verifier(), [("forged file", forged)])
    assert [f.kind for f in report.findings] == ["witness"]
    assert "no signature" in report.findings[0].message


async def test_checkpointer_fails_closed_on_a_tampered_event(tmp_path):
    """An event tampered with before any checkpoint: a checkpointer that has to read it back
    (another process's) refuses to sign; the writer's own signs the bytes it wrote, and
    verify names the tampered event."""
    backend, log, signer, cp, events, note, witness = await make(tmp_path)
    await log.emit("exec")
    item = await backend.get(event_key(30))
    await backend.put(Item(item.key, item.value.replace(b'"index":30', b'"index":3')))
    other = Checkpointer(AuditLog(backend, FakeClock(), "c1"), signer, FakeClock())
    with pytest.raises(Exception, match="tampered"):
        await other.checkpoint()
    assert os.path.exists(witness.location)
    assert (await cp.checkpoint()).split("\n")[1] == "31"
    report = await run_verify(log, signer, witness)
    assert [(f.kind, f.index) for f in report.findings] == [("modified", 30)]


@settings(max_examples=25)
@given(
    op=st.sampled_from(["modify", "delete", "swap", "insert", "truncate"]),
    at=st.integers(0, 18),
)
def test_any_single_tampering_is_found_at_its_index(op, at):
    async def go() -> None:
        clock = FakeClock()
        backend = MemoryBackend(clock)
        log = AuditLog(backend, clock, "c1")
        signer = await load_or_create_signer(backend, KEK, "c1", clock)
        events = [await log.emit("exec", n=i) for i in range(20)]
        await Checkpointer(log, signer, clock).checkpoint()
        values = [(await backend.get(event_key(i))).value for i in range(20)]
        if op == "modify":
            await backend.put(Item(event_key(at), values[at].replace(b'"n":', b'"n":1')))
        elif op == "delete":
            await backend.delete(event_key(at))
        elif op == "swap":
            await backend.put(Item(event_key(at), values[at + 1]))
            await backend.put(Item(event_key(at + 1), values[at]))
        elif op == "insert":
            forged = values[at].replace(events[at].id.encode(), b"forged")
            for i, v in enumerate([forged, *values[at:]]):
                await backend.put(Item(event_key(at + i), v))
        else:
            for i in range(at, 20):
                await backend.delete(event_key(i))
        report = await verify_log(log, signer.verifier())
        assert not report.ok
        assert any(f.index == at for f in report.findings), report.findings

    asyncio.run(go())


async def test_a_restarted_writer_never_refills_a_hole_in_signed_history(tmp_path):
    backend, log, signer, cp, events, note, witness = await make(tmp_path, 10)
    await backend.delete(event_key(3))
    fresh = AuditLog(backend, FakeClock(), "c1")  # a restarted auth server
    assert (await fresh.emit("exec")).index == 10
    f = (await run_verify(log, signer, witness)).findings[0]
    assert (f.kind, f.index, f.event_id) == ("deleted", 3, events[3].id)
