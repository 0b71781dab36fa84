import asyncio
import hashlib
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit.log import PREFIX, AuditLog, AuditQuery, event_key, index_of_key, range_prefixes
from bastion.backend.base import Item
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.errors import BadParameter, BastionError, ConnectionProblem
from bastion.types.audit import AuditEvent


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


async def test_indexes_are_gapless_and_read_from_pages_in_order():
    clock = FakeClock()
    log = AuditLog(MemoryBackend(clock), clock, "c1")
    emitted = [await log.emit("user.login", user=f"u{i}") for i in range(37)]
    assert [e.index for e in emitted] == list(range(37))
    assert [e.index for e in await log.read_from(0, 1000)] == list(range(37))
    assert [e.index for e in await log.read_from(5, 10)] == list(range(5, 15))
    assert [e.user for e in await log.read_from(30, 3)] == ["u30", "u31", "u32"]
    assert await log.read_from(37, 10) == []
    assert await log.size() == 37


async def test_a_second_writer_on_the_same_backend_continues_the_sequence():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    a, b = AuditLog(backend, clock, "c1"), AuditLog(backend, clock, "c1")
    await a.emit("x")
    await b.emit("x")  # b looks the head up: 1
    await a.emit("x")  # a's cached next (1) is taken: it moves on to 2
    await b.emit("x")
    assert [e.index for e in await a.read_from(0, 10)] == [0, 1, 2, 3]


async def test_read_from_skips_a_hole_and_rejects_bad_arguments():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    for _ in range(5):
        await log.emit("x")
    await backend.delete(event_key(2))
    assert [e.index for e in await log.read_from(0, 3)] == [0, 1, 3]
    with pytest.raises(BadParameter):
        await log.read_from(-1, 3)
    with pytest.raises(BadParameter):
        await log.read_from(0, 0)


async def test_search_skips_an_unreadable_event():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    await log.emit("x")
    await backend.put(Item(event_key(1), b"{not json"))
    assert len(await log.search(AuditQuery())) == 1


@given(st.integers(0, 10**7), st.integers(1, 30_000))
def test_range_prefixes_cover_the_range_with_few_queries(lo, span):
    prefixes = range_prefixes(lo, lo + span)
    assert len(prefixes) <= 12
    for i in {lo, lo + span - 1, lo + span // 2}:
        assert sum(event_key(i).startswith(p) for p in prefixes) == 1
    covered = 0
    for p in prefixes:
        covered += 10 ** (len(PREFIX) + 20 - len(p))
    assert covered <= 3 * span


def test_index_of_key():
    assert index_of_key(event_key(42)) == 42
    assert index_of_key(PREFIX + "42") is None
    assert index_of_key(PREFIX + "0000000000000000004x") is None


async def test_concurrent_emitters_are_group_committed_gaplessly():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    events = await asyncio.gather(*(log.emit("exec", user=f"u{i}") for i in range(60)))
    assert sorted(e.index for e in events) == list(range(60))
    stored = await log.read_from(0, 100)
    assert {e.id for e in stored} == {e.id for e in events}
    many = await log.emit_many([("exec", "success", {"n": i}) for i in range(1200)])
    assert [e.index for e in many] == list(range(60, 1260))
    assert (await log.read_from(1259, 5))[0].fields == {"n": 1199}


async def test_a_failed_write_fails_every_waiting_emitter_and_recovers():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    await log.emit("x")
    await backend.close()
    with pytest.raises(ConnectionProblem):
        await log.emit("x")


async def test_emit_once_skips_a_known_dedupe_key_and_keeps_indexes_gapless():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    ttl = timedelta(days=3)
    k = "audit/agent-ids/web1/"
    first = await log.emit_once([("x", "success", {}, k + "a"), ("x", "success", {}, k + "b")], ttl)
    assert [e.index for e in first if e] == [0, 1]
    again = await log.emit_once(
        [
            ("x", "success", {"n": 1}, k + "a"),  # resent: skipped
            ("x", "success", {"n": 2}, k + "c"),
            ("x", "success", {"n": 3}, k + "c"),  # repeated within one call: skipped
            ("x", "success", {"n": 4}, None),  # no key: always stored
        ],
        ttl,
    )
    assert [e.index if e else None for e in again] == [None, 2, None, 3]
    assert [e.index for e in await log.read_from(0, 10)] == [0, 1, 2, 3]
    assert (await backend.get(k + "c")).expires == clock.now() + ttl
    clock.advance(ttl + timedelta(seconds=1))  # forgotten after the TTL
    [late] = await log.emit_once([("x", "success", {}, k + "a")], ttl)
    assert late is not None and late.index == 4
    with pytest.raises(BadParameter):
        await log.emit_once([("x", "success", {}, "audit/events/00000000000000000009")], ttl)


async def test_emit_once_from_two_writers_racing_stores_one_copy():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    a, b = AuditLog(backend, clock, "c1"), AuditLog(backend, clock, "c1")
    ttl = timedelta(days=1)
    await a.emit("x")
    await b.emit("x")  # both know the head
    keys = [f"audit/agent-ids/n/{i}" for i in range(20)]
    specs = [("x", "success", {"i": i}, key) for i, key in enumerate(keys)]
    got_a, got_b = await asyncio.gather(a.emit_once(specs, ttl), b.emit_once(specs, ttl))
    stored = [e for e in got_a + got_b if e is not None]
    assert sorted(e.fields["i"] for e in stored) == list(range(20))
    events = await a.read_from(0, 100)
    assert [e.index for e in events] == list(range(22))  # gapless, no duplicate


async def test_emit_once_on_a_backend_without_batches():
    clock = FakeClock()

    class NoBatch:  # only the Backend protocol: single creates, no transactions
        def __init__(self) -> None:
            self.inner = MemoryBackend(clock)

        def __getattr__(self, name: str) -> object:
            if name == "create_batch":
                raise AttributeError(name)
            return getattr(self.inner, name)

    log = AuditLog(NoBatch(), clock, "c1")  # type: ignore[arg-type]
    specs = [("x", "success", {}, "audit/agent-ids/n/1")] * 2
    got = await log.emit_once(specs, timedelta(days=1))
    assert [e.index if e else None for e in got] == [0, None]


async def test_check_refuses_an_event_that_cannot_be_stored():
    clock = FakeClock()
    log = AuditLog(MemoryBackend(clock), clock, "c1")
    log.check("x", "success", {"user": "alice", "anything": [1, {"a": None}]})
    with pytest.raises(BadParameter, match="not a storable audit event"):
        log.check("x", "success", {"user": {"not": "a string"}})


async def test_emit_once_on_sqlite_two_logs_one_file(tmp_path):
    from bastion.backend.sqlite import SQLiteBackend

    clock = FakeClock()
    one = await SQLiteBackend.open(str(tmp_path / "b.db"), clock)
    two = await SQLiteBackend.open(str(tmp_path / "b.db"), clock)
    try:
        a, b = AuditLog(one, clock, "c1"), AuditLog(two, clock, "c1")
        ttl = timedelta(days=3)
        specs = [("x", "success", {"i": i}, f"audit/agent-ids/n/{i % 7}") for i in range(30)]
        got = await asyncio.gather(a.emit_once(specs, ttl), b.emit_once(specs, ttl))
        assert sum(e is not None for run in got for e in run) == 7
        events = await a.read_from(0, 100)
        assert [e.index for e in events] == list(range(7))
        assert sorted(e.fields["i"] for e in events) == list(range(7))
    finally:
        await one.close()
        await two.close()


# -- changes committed with their event (issue 21) ---------------------------------------------


async def test_commit_change_stores_the_change_and_its_event_together():
    from bastion.backend.base import Create, Delete, Item, Update
    from bastion.errors import AlreadyExists, CompareFailed

    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    done = await log.commit_change(
        "role.create", [Create(Item("roles/dev", b"v1"))], user="alice", target="role/dev"
    )
    assert done.event.index == 0 and done.items[0] is not None
    assert done.event.fields["changes"] == [
        {
            "key": "roles/dev",
            "op": "create",
            "state_sha256": hashlib.sha256(b"v1").hexdigest(),
        }
    ]
    with pytest.raises(AlreadyExists) as info:
        await log.commit_change("role.create", [Create(Item("roles/dev", b"v2"))], user="bob")
    assert info.value.key == "roles/dev"
    with pytest.raises(CompareFailed):
        await log.commit_change("role.update", [Update(Item("roles/dev", b"v3"), 999)])
    assert [e.index for e in await log.read_from(0, 10)] == [0]  # no event for a failed change
    assert (await backend.get("roles/dev")).value == b"v1"
    gone = await log.commit_change("role.delete", [Delete("roles/dev")], user="alice")
    assert gone.items == [None] and gone.event.index == 1
    with pytest.raises(BadParameter, match="audit log's key"):
        await log.commit_change("x", [Create(Item("audit/events/x", b""))])


async def test_concurrent_changes_and_events_group_commit_gaplessly():
    """Changes on one key apply in order (one transaction each); failed conditions fail alone;
    plain events are never lost; indexes stay gapless with a second writer on the backend."""
    from bastion.backend.base import Create, Item

    clock = FakeClock()
    backend = MemoryBackend(clock)
    a, b = AuditLog(backend, clock, "c1"), AuditLog(backend, clock, "c1")

    async def create(log: AuditLog, n: int) -> bool:
        try:
            await log.commit_change("x.create", [Create(Item(f"k/{n % 10}", str(n).encode()))])
        except BastionError:
            return False
        return True

    jobs = [create(a if n % 2 else b, n) for n in range(60)]
    jobs += [a.emit("exec", n=n) for n in range(30)] + [b.emit("exec", n=n) for n in range(30)]
    results = await asyncio.gather(*jobs)
    assert sum(r is True for r in results[:60]) == 10  # one winner per key
    events = await a.read_from(0, 1000)
    assert [e.index for e in events] == list(range(70))
    created = {c["key"] for e in events for c in e.fields.get("changes", [])}
    assert created == {f"k/{i}" for i in range(10)}


async def test_a_change_retries_at_the_next_index_when_another_writer_took_it():
    from bastion.backend.base import Create, Item

    clock = FakeClock()
    backend = MemoryBackend(clock)
    a, b = AuditLog(backend, clock, "c1"), AuditLog(backend, clock, "c1")
    await a.emit("x")
    await b.emit("x")  # a's cached head (1) is now taken
    done = await a.commit_change("role.create", [Create(Item("roles/r", b"1"))])
    assert done.event.index == 2
    assert (await backend.get("roles/r")).value == b"1"


# -- the bulk writers' path (issues 14, 15) ----------------------------------------------------


def _bulk_specs() -> list[tuple[str, str, dict[str, object]]]:
    from datetime import UTC, datetime

    return [
        (
            "db.session.query",
            "success",
            {"user": "alice", "query": "SELECT $1", "parameters": ["7"], "db_name": "z\u00e9"},
        ),
        (
            "app.request",
            "success",
            {"user": "bob", "session_id": "s1", "status": 200, "duration_ms": 0.4, "ok": True},
        ),
        ("app.request", "failure", {"user": None, "index": 99, "reason": "denied", "n": None}),
        ("x", "success", {"when": datetime(2026, 1, 1, tzinfo=UTC), "nested": {"a": [1, {}]}}),
        ("x", "success", {"huge": float("inf")}),  # not plain: the validated path
    ]


async def test_append_many_stores_what_emit_many_stores():
    """The same events (all but the id) as emit_many, canonical bytes (what encode() gives
    for the decoded event), consecutive indexes, one clock reading per call, unique ids."""
    from bastion.audit.canonical import encode

    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    emitted = await log.emit_many(_bulk_specs())
    assert await log.append_many(_bulk_specs()) == 5
    items = await log.read_items(0, 100)
    assert [index_of_key(i.key) for i in items] == list(range(10))
    stored = [decode_item(i.value) for i in items]
    for item, event in zip(items, stored, strict=True):
        assert encode(event) == item.value
    assert [e.index for e in emitted] == list(range(5))
    for old, new in zip(stored[:5], stored[5:], strict=True):
        assert new.model_dump(exclude={"id", "index"}) == old.model_dump(exclude={"id", "index"})
    assert stored[7].user == "" and "index" not in stored[7].fields and stored[7].index == 7
    ids = [e.id for e in stored]
    assert len(set(ids)) == 10
    base = int(ids[5].split("-")[0])  # the plain ones: one clock reading, + 1 each
    assert [int(i.split("-")[0]) for i in ids[5:8]] == [base, base + 1, base + 2]


def decode_item(value: bytes) -> AuditEvent:
    from bastion.audit.canonical import decode

    return decode(value)


async def test_a_bulk_writer_stores_what_append_many_stores():
    """bulk(...).append: the events append_many stores for the shared attributes merged with
    each one's own fields (own keys win), all but the ids; own fields that are not plain or
    name a top-level attribute take the general path; shared attributes that are not plain
    make every event take it. Checkpointed from the writer's memory like append_many's."""
    from datetime import UTC, datetime

    from bastion.audit.canonical import encode
    from bastion.audit.checkpointer import Checkpointer
    from bastion.audit.signer import load_or_create_signer

    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    shared = {"user": "alice", "session_id": "s1", "db_service": "pg1", "db_name": "z\u00e9"}
    owns: list[dict[str, object]] = [
        {"query": "SELECT $1", "parameters": ["7", None], "protocol": "extended"},
        {"protocol": "simple", "query": "SELECT 1", "parameters": []},  # another key order
        {"query": "x", "db_name": "other"},  # replaces a shared field
        {"query": "y", "when": datetime(2026, 1, 1, tzinfo=UTC)},  # not plain
        {"query": "z", "target": "t1"},  # a top-level attribute
    ]
    assert (
        await log.append_many([("db.session.query", "success", {**shared, **o}) for o in owns]) == 5
    )
    assert await log.bulk("db.session.query", **shared).append(owns) == 5
    odd = log.bulk(
        "db.session.query", outcome="failure", user="bob", when=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert await odd.append([{"query": "q"}]) == 1
    assert await log.bulk("x").append([]) == 0
    items = await log.read_items(0, 100)
    stored = [decode_item(i.value) for i in items]
    assert [e.index for e in stored] == list(range(11))
    for item, event in zip(items, stored, strict=True):
        assert encode(event) == item.value
    for old, new in zip(stored[:5], stored[5:10], strict=True):
        assert new.model_dump(exclude={"id", "index"}) == old.model_dump(exclude={"id", "index"})
    assert stored[7].fields["db_name"] == "other" and stored[9].target == "t1"
    assert stored[10].user == "bob" and stored[10].outcome == "failure"
    assert len({e.id for e in stored}) == 11
    signer = await load_or_create_signer(backend, bytes(32), "c1", clock)
    await Checkpointer(log, signer, clock).checkpoint()
    assert log._leaves == {}  # every one folded from memory


async def test_append_many_refuses_what_emit_many_refuses():
    clock = FakeClock()
    log = AuditLog(MemoryBackend(clock), clock, "c1")
    with pytest.raises(ValueError):
        await log.emit_many([("x", "success", {"user": 7})])
    with pytest.raises(ValueError):
        await log.append_many([("x", "success", {"user": 7})])
    assert await log.size() == 0


async def test_append_many_from_two_writers_and_with_changes_stays_gapless(tmp_path):
    """Two logs on one SQLite file (each finds its cached head taken, AlreadyExists on the
    fast create_many path) and bulk batches group committed with changes and dedupe keys:
    every event stored once, indexes gapless."""
    from bastion.backend.base import Create
    from bastion.backend.sqlite import SQLiteBackend

    clock = FakeClock()
    one = await SQLiteBackend.open(str(tmp_path / "bulk.db"), clock)
    two = await SQLiteBackend.open(str(tmp_path / "bulk.db"), clock)
    try:
        a, b = AuditLog(one, clock, "c1"), AuditLog(two, clock, "c1")
        await a.emit("x")
        await b.emit("x")  # a's cached head is taken

        def batch(tag: str, n: int) -> list[tuple[str, str, dict[str, object]]]:
            return [("app.request", "success", {"user": tag, "n": i}) for i in range(n)]

        ttl = timedelta(days=1)
        await asyncio.gather(
            a.append_many(batch("a1", 700)),  # two transactions
            b.append_many(batch("b1", 30)),
            a.commit_change("x.create", [Create(Item("k/1", b"1"))]),
            a.emit_once([("x", "success", {"user": "once"}, "audit/agent-ids/n/1")], ttl),
            a.append_many(batch("a2", 20)),
            b.append_many(batch("b2", 5)),
        )
        events = await a.read_from(0, 2000)
        assert [e.index for e in events] == list(range(2 + 700 + 30 + 1 + 1 + 20 + 5))
        users = [e.user for e in events]
        for tag, n in (("a1", 700), ("b1", 30), ("a2", 20), ("b2", 5)):
            got = [e.fields["n"] for e in events if e.user == tag]
            assert got == list(range(n)), tag
        assert users.count("once") == 1
        assert (await one.get("k/1")).value == b"1"
    finally:
        await one.close()
        await two.close()


async def test_a_batch_stored_between_block_reads_never_shows_as_a_hole():
    """read_items over several key blocks while another writer stores a batch between two
    block reads: the answer is a gapless run from the first index asked (what was stored
    before the first read, and maybe more), never a later block without an earlier one."""
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log, other = AuditLog(backend, clock, "c1"), AuditLog(backend, clock, "c1")
    await log.append_many([("x", "success", {"n": n}) for n in range(95)])
    reads = 0
    real_get_range = backend.get_range

    async def racing_get_range(
        prefix: str, limit: int | None = None, *, containing: bytes | None = None
    ) -> list[Item]:
        nonlocal reads
        reads += 1
        if reads == 2:  # between the first and second block read: events 95..149 arrive
            await other.append_many([("x", "success", {"n": n}) for n in range(95, 150)])
        return await real_get_range(prefix, limit, containing=containing)

    backend.get_range = racing_get_range  # type: ignore[method-assign]
    assert len(range_prefixes(90, 190)) > 1
    items = await log.read_items(90, 100)
    indexes = [index_of_key(i.key) for i in items]
    assert indexes == list(range(90, 90 + len(indexes))) and len(indexes) >= 5, indexes
