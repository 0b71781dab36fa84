from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from exportkit import FlakyOutput, ListSource, make_event

from bastion.errors import ConnectionProblem, LocalProtocolError
from bastion.export.cursor import FileCursor
from bastion.export.forwarder import Forwarder, backoff_delay, check_contiguous


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_delay(n, 0.5, 5) for n in range(0, 7)] == [0, 0.5, 1, 2, 4, 5, 5]
    assert backoff_delay(10_000, 1, 60) == 60


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


def _forwarder(
    tmp_path: Path, source: ListSource, output: FlakyOutput, batch: int = 3
) -> tuple[Forwarder, Sleeps]:
    sleeps = Sleeps()
    fwd = Forwarder(
        source=source,
        output=output,
        cursor=FileCursor(tmp_path / "cursor"),
        batch_size=batch,
        backoff_base=1,
        backoff_cap=8,
        sleep=sleeps,
    )
    return fwd, sleeps


async def test_once_delivers_everything_in_batches_and_saves_cursor(tmp_path: Path) -> None:
    events = [make_event(n) for n in range(7)]
    output = FlakyOutput()
    fwd, _ = _forwarder(tmp_path, ListSource(events), output)
    assert await fwd.run_once() == 7
    assert [len(b) for b in output.batches] == [3, 3, 1]
    assert [e for b in output.batches for e in b] == events
    assert await FileCursor(tmp_path / "cursor").load() == 7
    assert output.closed
    # Nothing new: a second run delivers nothing and keeps the cursor.
    output2 = FlakyOutput()
    fwd2, _ = _forwarder(tmp_path, ListSource(events), output2)
    assert await fwd2.run_once() == 0
    assert output2.batches == []


async def test_resumes_from_the_persisted_cursor(tmp_path: Path) -> None:
    events = [make_event(n) for n in range(5)]
    await FileCursor(tmp_path / "cursor").save(3)
    output = FlakyOutput()
    fwd, _ = _forwarder(tmp_path, ListSource(events), output)
    assert await fwd.run_once() == 2
    assert output.batches == [events[3:5]]


async def test_outage_retries_same_batch_with_backoff_and_no_gap(tmp_path: Path) -> None:
    events = [make_event(n) for n in range(6)]
    output = FlakyOutput(fail=5)
    fwd, sleeps = _forwarder(tmp_path, ListSource(events), output)
    assert await fwd.run_once(max_attempts=None) == 6
    assert sleeps.delays == [1, 2, 4, 8, 8]
    assert [e for b in output.batches for e in b] == events
    assert fwd.status.failing_since is None and fwd.status.last_error == ""


async def test_once_gives_up_without_moving_cursor(tmp_path: Path) -> None:
    events = [make_event(n) for n in range(6)]
    output = FlakyOutput(fail=100)
    fwd, _ = _forwarder(tmp_path, ListSource(events), output)
    with pytest.raises(ConnectionProblem, match="failed 3 times, cursor stays at 0"):
        await fwd.run_once(max_attempts=3)
    assert await FileCursor(tmp_path / "cursor").load() == 0
    assert fwd.status.last_error == "receiver down"


async def test_cursor_is_saved_only_after_ack(tmp_path: Path) -> None:
    events = [make_event(n) for n in range(6)]
    cursor = FileCursor(tmp_path / "cursor")
    seen: list[int] = []

    class Checking(FlakyOutput):
        async def send(self, batch):  # type: ignore[no-untyped-def]
            seen.append(await cursor.load())
            await super().send(batch)

    fwd, _ = _forwarder(tmp_path, ListSource(events), Checking())
    await fwd.run_once()
    assert seen == [0, 3]


async def test_read_failures_are_retried(tmp_path: Path) -> None:
    source = ListSource([make_event(n) for n in range(2)])
    source.fail_reads = 2
    output = FlakyOutput()
    fwd, sleeps = _forwarder(tmp_path, source, output)
    assert await fwd.run_once() == 2
    assert sleeps.delays == [1, 2]


async def test_run_polls_until_cancelled(tmp_path: Path) -> None:
    source = ListSource([make_event(0)])
    output = FlakyOutput()
    fwd, sleeps = _forwarder(tmp_path, source, output)
    task = asyncio.ensure_future(fwd.run())
    await _until(lambda: fwd.status.next_index == 1)
    source.events.append(make_event(1))
    await _until(lambda: fwd.status.next_index == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [e.id for b in output.batches for e in b] == [make_event(0).id, make_event(1).id]
    assert output.closed
    assert fwd.status.next_index == 2
    assert sleeps.delays and set(sleeps.delays) == {fwd.poll_interval}


def test_contiguity_is_checked_when_events_carry_an_index() -> None:
    class Indexed:
        def __init__(self, index: int) -> None:
            self.index = index

    check_contiguous([Indexed(4), Indexed(5)], 4)  # type: ignore[list-item]
    with pytest.raises(LocalProtocolError, match="expected event index 5"):
        check_contiguous([Indexed(4), Indexed(6)], 4)  # type: ignore[list-item]
    with pytest.raises(LocalProtocolError, match="expected event index 0"):
        check_contiguous([Indexed(1)], 0)  # type: ignore[list-item]


def test_batch_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Forwarder(ListSource(), FlakyOutput(), FileCursor(tmp_path / "c"), batch_size=0)
