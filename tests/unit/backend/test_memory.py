"""MemoryBackend specifics beyond the compliance suite (history bound, sweeping, close)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bastion.backend import EventType, Item, MemoryBackend, open_backend
from bastion.clock import FakeClock
from bastion.errors import BadParameter, CompareFailed, ConnectionProblem


@pytest.fixture
async def backend() -> MemoryBackend:
    return MemoryBackend(FakeClock(), max_events=3, sweep_interval=None)


async def test_history_is_bounded_and_resume_from_trimmed_fails(backend: MemoryBackend) -> None:
    written = [await backend.put(Item("k", str(n).encode())) for n in range(5)]
    with pytest.raises(CompareFailed, match="trimmed"):
        await backend.watch(start_revision=written[0].revision)
    watcher = await backend.watch(start_revision=written[1].revision)
    iterator = aiter(watcher)
    assert [(await anext(iterator)).item.revision for _ in range(3)] == [
        w.revision for w in written[2:]
    ]


async def test_expiry_sweeps_on_next_operation_with_delete_event() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock, sweep_interval=None)
    await backend.put(Item("t/1", b"x", expires=clock.now() + timedelta(seconds=5)))
    watcher = await backend.watch()
    clock.advance(5)  # expiry is inclusive: gone at exactly `expires`
    assert await backend.get_range("t/") == []
    event = await anext(aiter(watcher))
    assert (event.type, event.item.key, event.item.value) == (EventType.DELETE, "t/1", b"")
    assert event.item.revision == await backend.current_revision() == 2


async def test_returned_items_carry_the_revision(backend: MemoryBackend) -> None:
    first = await backend.put(Item("a", b"1", revision=999))
    assert first.revision == 1
    assert (await backend.get("a")) == first


async def test_closed_backend_refuses_work(backend: MemoryBackend) -> None:
    watcher = await backend.watch()
    await backend.close()
    await backend.close()  # idempotent
    with pytest.raises(ConnectionProblem):
        await backend.get("a")
    with pytest.raises(ConnectionProblem):
        await anext(aiter(watcher))


def test_max_events_must_be_positive() -> None:
    with pytest.raises(BadParameter):
        MemoryBackend(max_events=0)


async def test_open_backend_memory_and_missing_parameters() -> None:
    memory = await open_backend("memory", clock=FakeClock())
    assert isinstance(memory, MemoryBackend)
    await memory.close()
    with pytest.raises(BadParameter, match="needs a database file"):
        await open_backend("sqlite")
    with pytest.raises(BadParameter, match="needs a connection string"):
        await open_backend("postgres", path="/ignored")
    with pytest.raises(BadParameter, match="unknown backend kind"):
        await open_backend("etcd")  # type: ignore[arg-type]


async def test_create_batch_is_all_or_nothing(backend: MemoryBackend) -> None:
    from bastion.errors import AlreadyExists

    await backend.create_batch([Item("b/1", b"1"), Item("b/2", b"2")])
    with pytest.raises(AlreadyExists):
        await backend.create_batch([Item("b/3", b"3"), Item("b/2", b"x")])
    with pytest.raises(AlreadyExists):
        await backend.create_batch([Item("b/4", b"4"), Item("b/4", b"x")])
    assert [i.key for i in await backend.get_range("b/")] == ["b/1", "b/2"]
