"""Checkpointer: signs only when the log grew, two checkpointers share one state, proofs."""

from __future__ import annotations

import asyncio
import base64

import pytest

from bastion.audit import checkpointer
from bastion.audit.canonical import encode
from bastion.audit.checkpointer import FOLD_SLICE, Checkpointer, load_state
from bastion.audit.log import AuditLog, event_key
from bastion.audit.merkle import leaf_hash, verify_inclusion
from bastion.audit.note import open_note, parse_checkpoint
from bastion.audit.signer import load_or_create_signer
from bastion.backend.base import Item
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.errors import BadParameter
from bastion.types.audit import AuditEvent

KEK = bytes(32)


async def setup():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    signer = await load_or_create_signer(backend, KEK, "c1", clock)
    return clock, backend, log, signer


async def test_two_checkpointers_on_one_backend_agree():
    clock, backend, log, signer = await setup()
    a = Checkpointer(log, signer, clock)
    b = Checkpointer(AuditLog(backend, clock, "c1"), signer, clock)
    await log.emit_many([("exec", "success", {"n": i}) for i in range(1500)])
    notes = await asyncio.gather(a.checkpoint(), b.checkpoint(), a.checkpoint())
    sizes = {parse_checkpoint(open_note(n, signer.verifier())).size for n in notes}
    assert sizes == {1500}
    _, state = await load_state(log)
    assert state.size == 1500
    await log.emit("exec")
    cp = parse_checkpoint(open_note(await b.checkpoint(), signer.verifier()))
    assert cp.size == 1501
    assert state.frontier.root() != cp.root


async def test_inclusion_proof_verifies_against_the_signed_root():
    clock, backend, log, signer = await setup()
    cp = Checkpointer(log, signer, clock)
    events = [await log.emit("user.login", user=f"u{i}") for i in range(20)]
    proof = await cp.inclusion(event_id=events[13].id)
    assert proof["index"] == 13 and proof["tree_size"] == 20
    checkpoint = parse_checkpoint(open_note(proof["checkpoint"], signer.verifier()))
    leaf = leaf_hash(encode(AuditEvent.model_validate(proof["event"])))
    path = [base64.b64decode(h) for h in proof["proof"]]
    assert verify_inclusion(13, checkpoint.size, leaf, path, checkpoint.root)
    assert not verify_inclusion(12, checkpoint.size, leaf, path, checkpoint.root)
    by_index = await cp.inclusion(index=3)
    assert by_index["id"] == events[3].id


async def _ticks_during_catch_up() -> int:
    """How often another task ran while a checkpoint folded 900 new events."""
    clock, backend, log, signer = await setup()
    await log.emit_many([("exec", "success", {"n": i}) for i in range(900)])
    ticks = 0
    done = False

    async def other_connection() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_connection())
    await asyncio.sleep(0)
    before = ticks
    await Checkpointer(log, signer, clock).checkpoint()
    done = True
    await other
    return ticks - before


async def test_a_long_catch_up_lets_other_tasks_run_between_slices(monkeypatch):
    sliced = await _ticks_during_catch_up()
    monkeypatch.setattr(checkpointer, "FOLD_SLICE", 10**9)
    in_one_go = await _ticks_during_catch_up()  # only the backend's own awaits yield
    assert sliced >= in_one_go + 900 // FOLD_SLICE


async def test_events_this_process_stored_are_folded_without_parsing_them_back(monkeypatch):
    clock, backend, log, signer = await setup()
    parsed = []
    real_identify = checkpointer._identify
    monkeypatch.setattr(
        checkpointer,
        "_identify",
        lambda value, index: parsed.append(index) or real_identify(value, index),
    )
    await log.emit_many([("exec", "success", {"n": i}) for i in range(40)])
    await log.append_many([("db.session.query", "success", {"query": f"q{i}"}) for i in range(40)])
    await log.emit("user.login", user="alice")
    mine = parse_checkpoint(
        open_note(await Checkpointer(log, signer, clock).checkpoint(), signer.verifier())
    )
    assert mine.size == 81 and parsed == []
    # Another process (a fresh log and checkpointer) parses every event and signs the same tree.
    clock2 = FakeClock()
    other = MemoryBackend(clock2)
    for item in await backend.get_range("audit/events/"):
        await other.create(item)
    theirs_log = AuditLog(other, clock2, "c1")
    theirs = parse_checkpoint(
        open_note(await Checkpointer(theirs_log, signer, clock2).checkpoint(), signer.verifier())
    )
    assert len(parsed) == 81 and (theirs.size, theirs.root) == (mine.size, mine.root)


async def test_the_tree_commits_to_what_the_writer_wrote_and_verify_finds_a_change():
    """An event changed behind the writer before the checkpoint: the checkpoint signs the leaf
    of the bytes the writer committed (not the forgery), so verify names the changed event;
    another process (nothing remembered) parses it and refuses to sign."""
    from bastion.audit.verify import verify_log

    clock, backend, log, signer = await setup()
    await log.emit_many([("exec", "success", {"n": i}) for i in range(5)])
    item = await backend.get(event_key(3))
    written = leaf_hash(item.value)
    forged = item.value.replace(b'"index":3', b'"index":4')
    await backend.delete(item.key)
    await backend.create(Item(key=item.key, value=forged))  # same index key, other bytes
    fresh = AuditLog(backend, clock, "c1")
    with pytest.raises(BadParameter, match="names another index"):
        await Checkpointer(fresh, signer, clock).checkpoint()
    note = await Checkpointer(log, signer, clock).checkpoint()
    assert parse_checkpoint(open_note(note, signer.verifier())).size == 5
    proof = await Checkpointer(log, signer, clock).inclusion(index=3)
    assert base64.b64decode(proof["leaf_hash"]) == written
    report = await verify_log(log, signer.verifier())
    assert not report.ok
    assert [(f.kind, f.index) for f in report.findings] == [("modified", 3)]


async def test_the_writer_remembers_a_bounded_number_of_events(monkeypatch):
    from bastion.audit import log as audit_log

    monkeypatch.setattr(audit_log, "LEAF_MEMORY", 10)
    clock, backend, log, signer = await setup()
    await log.append_many([("exec", "success", {"n": i}) for i in range(50)])
    assert len(log._leaves) == 10 and min(log._leaves) == 40  # the newest kept
    note = await Checkpointer(log, signer, clock).checkpoint()
    assert parse_checkpoint(open_note(note, signer.verifier())).size == 50
    assert log._leaves == {}


async def test_a_batch_stored_while_the_checkpointer_reads_is_no_hole(monkeypatch):
    """Events the checkpointer must read back (another writer's), and a batch that lands
    between its reads: it folds what it read, reports no hole, and the next checkpoint
    takes the rest. (It used to read on past a short read into the next chunk and log
    ``audit_log_hole`` at the chunk's end.)"""
    clock, backend, log, signer = await setup()
    other = AuditLog(backend, clock, "c1")  # its leaves are not in log's memory
    await other.emit_many([("exec", "success", {"n": i}) for i in range(950)])
    holes: list[dict[str, object]] = []
    real_error = checkpointer.log.error

    def error(event: str, **fields: object) -> None:
        if event == "audit_log_hole":
            holes.append(fields)
        real_error(event, **fields)

    monkeypatch.setattr(checkpointer.log, "error", error)
    real_get_range = backend.get_range
    reads = 0

    async def racing_get_range(
        prefix: str, limit: int | None = None, *, containing: bytes | None = None
    ) -> list[Item]:
        nonlocal reads
        found = await real_get_range(prefix, limit, containing=containing)
        reads += prefix.startswith("audit/events/")
        if reads == 1 and prefix.startswith("audit/events/"):  # right after the first read
            await other.emit_many([("exec", "success", {"n": i}) for i in range(950, 1200)])
        return found

    monkeypatch.setattr(backend, "get_range", racing_get_range)
    cp = Checkpointer(log, signer, clock)
    first = parse_checkpoint(open_note(await cp.checkpoint(), signer.verifier()))
    assert holes == [] and first.size == 950
    second = parse_checkpoint(open_note(await cp.checkpoint(), signer.verifier()))
    assert holes == [] and second.size == 1200
    assert reads > 1  # the batch did land between the reads
