from __future__ import annotations

import asyncio
import json
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


def saved(tmp_path: Path) -> int:
    """The cursor on disk (read without taking the exporter lock)."""
    path = tmp_path / "cursor"
    return int(json.loads(path.read_text())["next_index"]) if path.exists() else 0


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0)  # yield until the condition holds; no real time passes


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
    assert saved(tmp_path) == 7
    assert output.closed
    # Nothing new: a second run delivers nothing and keeps the cursor.
    output2 = FlakyOutput()
    fwd2, _ = _forwarder(tmp_path, ListSource(events), output2)
    assert await fwd2.run_once() == 0
    assert output2.batches == []


async def test_resumes_from_the_persisted_cursor(tmp_path: Path) -> None:
    events = [make_event(n) for n in range(5)]
    await FileCursor(tmp_path / "cursor").save(3)  # save does not lock
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
    assert saved(tmp_path) == 0
    assert fwd.status.last_error == "receiver down"


async def test_cursor_is_saved_only_after_ack(tmp_path: Path) -> None:
    events = [make_event(n) for n in range(6)]
    seen: list[int] = []

    class Checking(FlakyOutput):
        async def send(self, batch):  # type: ignore[no-untyped-def]
            seen.append(saved(tmp_path))
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


def test_contiguity_is_checked() -> None:
    check_contiguous([make_event(4), make_event(5)], 4)
    with pytest.raises(LocalProtocolError, match="expected event index 5"):
        check_contiguous([make_event(4), make_event(6)], 4)
    with pytest.raises(LocalProtocolError, match="expected event index 0"):
        check_contiguous([make_event(1)], 0)
    with pytest.raises(LocalProtocolError, match="returned None"):
        check_contiguous([make_event(0, index=None)], 0)


async def test_once_stops_at_a_hole_without_skipping(tmp_path: Path) -> None:
    events = [make_event(n) for n in (0, 1, 3, 4)]
    output = FlakyOutput()
    fwd, _ = _forwarder(tmp_path, ListSource(events), output, batch=2)
    with pytest.raises(LocalProtocolError, match="expected event index 2, the log returned 3"):
        await fwd.run_once()
    assert output.batches == [events[:2]]
    assert saved(tmp_path) == 2


async def test_run_survives_a_hole_and_resumes_when_it_is_repaired(tmp_path: Path) -> None:
    source = ListSource([make_event(n) for n in (0, 2)])
    output = FlakyOutput()
    fwd, sleeps = _forwarder(tmp_path, source, output, batch=5)
    task = asyncio.ensure_future(fwd.run())
    await _until(lambda: "expected event index 1" in fwd.status.last_error)
    assert output.batches == []
    assert fwd.backoff_cap in sleeps.delays
    source.events = [make_event(n) for n in range(3)]
    await _until(lambda: fwd.status.next_index == 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [e.index for b in output.batches for e in b] == [0, 1, 2]


def test_batch_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Forwarder(ListSource(), FlakyOutput(), FileCursor(tmp_path / "c"), batch_size=0)
