"""bastion.tasks: named tasks, references kept, failures logged; and the ban on bare create_task."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from pathlib import Path

import pytest

from bastion import tasks as tasks_module
from bastion.tasks import TaskSet, spawn

SRC = Path(__file__).resolve().parents[2] / "src" / "bastion"


async def test_task_set_cancel_all() -> None:
    tasks = TaskSet()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = tasks.spawn(forever(), "forever")
    await started.wait()
    assert len(tasks) == 1 and list(tasks) == [task]
    await tasks.cancel_all()
    assert task.cancelled() and task.get_name() == "forever"
    assert len(tasks) == 0


async def test_spawn_keeps_a_reference_until_the_task_ends() -> None:
    release = asyncio.Event()

    async def wait() -> str:
        await release.wait()
        return "done"

    task = spawn(wait(), "held")
    name = task.get_name()
    del task
    gc.collect()
    assert any(t.get_name() == name for t in tasks_module._RUNNING)
    release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not any(t.get_name() == name for t in tasks_module._RUNNING)


async def test_a_failure_is_logged_once_with_the_task_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    tasks = TaskSet()
    caplog.set_level(logging.ERROR, logger="bastion.tasks")
    task = tasks.spawn(fail(), "failing-job")
    with pytest.raises(RuntimeError):
        await task  # awaiting still raises: the caller sees the error too
    await asyncio.sleep(0)
    failures = [r for r in caplog.records if r.name == "bastion.tasks"]
    assert len(failures) == 1 and "failing-job" in failures[0].getMessage()


async def test_a_cancellation_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="bastion.tasks")
    task = spawn(asyncio.Event().wait(), "cancelled")
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not [r for r in caplog.records if r.name == "bastion.tasks"]


def test_no_bare_create_task_in_the_package() -> None:
    """ruff's TID251 bans ``asyncio.create_task``; this catches ``loop.create_task`` too.

    Allowed: ``TaskGroup.create_task`` (receivers named ``group`` or ``tg``) and bastion/tasks.py.
    """
    receiver = re.compile(r"(\w*\)?)\.create_task\(")
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "tasks.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found = {m.group(1) for m in receiver.finditer(line)} - {"group", "tg"}
            if found and not line.lstrip().startswith("#"):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "use bastion.tasks.spawn / TaskSet or a TaskGroup:\n" + "\n".join(
        offenders
    )
