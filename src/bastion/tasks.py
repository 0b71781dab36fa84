"""Background tasks: named, referenced until done, and their failures logged.

Layer: the bottom (stdlib only, like :mod:`bastion.clock`). ``asyncio.create_task`` is banned by
ruff (TID251) and ``loop.create_task`` by ``tests/unit/test_tasks.py``: the event loop keeps only
a weak reference to a task, so a task nobody holds can be garbage-collected mid-flight, and an
exception in a task nobody awaits surfaces (if ever) as "Task exception was never retrieved" at
collection time. Use a :class:`asyncio.TaskGroup` when the caller waits for the tasks; otherwise:

* :func:`spawn` -- a fire-and-forget task, held in a module-level set until it ends;
* :class:`TaskSet` -- the tasks of one owner (a connection, a backend, a listener), which it
  cancels together (:meth:`TaskSet.cancel_all`, or :meth:`TaskSet.cancel` from sync code).

Either way the task has a name, and an exception that ends it (not a cancellation) is logged once
with its traceback under the ``bastion.tasks`` logger, whether or not someone awaits it later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["TaskSet", "retrieve_exception", "spawn"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_RUNNING: set[asyncio.Task[Any]] = set()
"""Strong references to the fire-and-forget tasks of :func:`spawn` until they end."""


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)


def _start(
    coro: Coroutine[Any, Any, T], name: str, refs: set[asyncio.Task[Any]]
) -> asyncio.Task[T]:
    task = asyncio.get_running_loop().create_task(coro, name=name)
    refs.add(task)
    task.add_done_callback(refs.discard)
    task.add_done_callback(_log_failure)
    return task


def retrieve_exception(task: asyncio.Future[Any]) -> None:
    """Done callback for a task whose awaiters get its outcome (a shared decision): mark its
    exception as seen, so that one whose awaiters all went away is not reported as "never
    retrieved" (a refusal is an answer, not a failure to log)."""
    if not task.cancelled():
        task.exception()


def spawn(coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """Run ``coro`` as a task named ``name``, referenced until it ends; failures are logged.

    Must be called with a running event loop. The caller may keep and await or cancel the task.
    """
    return _start(coro, name, _RUNNING)


class TaskSet:
    """The background tasks of one owner, referenced until done and cancelled together."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """As :func:`spawn`, the task also belonging to this set."""
        return _start(coro, name, self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def cancel(self) -> list[asyncio.Task[Any]]:
        """Cancel every running task (from sync code); returns them, for a caller to await."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    async def cancel_all(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Cancel every task and wait for them to end (at most ``timeout`` seconds).

        If this coroutine itself is cancelled, :func:`asyncio.wait` raises CancelledError, which
        propagates.
        """
        tasks = self.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
