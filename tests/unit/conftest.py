"""The unit layer is pure (docs/architecture.md, STYLE.md test layout): no sockets, no sleeps.

An autouse guard holds the rule for every test under ``tests/unit``:

* ``socket.socket.listen``/``connect``/``connect_ex`` fail the test: serving a port or dialling
  one. ``bind`` alone stays allowed (urllib3 probes IPv6 support by binding ``::1`` at import),
  and so does ``socket.socketpair()``: an in-memory pipe between two ends of the same test
  (asyncio's own self-pipe) opens no port.
* ``time.sleep`` with a delay above zero fails the test at once. An ``asyncio.sleep`` with a delay
  above zero fails it when the delay *runs out*, i.e. when the test really waited: a background
  loop of the code under test (the memory backend's expiry sweep) may start a sleep that the
  test's teardown cancels, which costs no time. ``asyncio.sleep(0)`` (and ``time.sleep(0)``) are
  allowed: they yield to the scheduler without waiting. Time-dependent code takes a
  :class:`bastion.clock.FakeClock` instead.

A violation raises :class:`ImpureUnitTest` at the call site and is recorded, so it fails the test
at teardown even when the code under test swallows the exception (a background task, a retry
loop that catches ``Exception``).
Tests that need real sockets or real time belong in ``tests/integration``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

_ADVICE = "tests/unit is pure: move this test to tests/integration or use a fake"


class ImpureUnitTest(AssertionError):
    """A unit test opened a socket or waited for real time."""


@pytest.fixture(autouse=True)
def _unit_tests_are_pure(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    violations: list[str] = []

    def refuse(what: str) -> None:
        violations.append(what)
        raise ImpureUnitTest(f"{what}: {_ADVICE}")

    def no_socket(name: str) -> Any:
        def blocked(self: socket.socket, *args: Any) -> Any:
            where = args[0] if name != "listen" else self.getsockname()
            refuse(f"socket.{name}({where!r})")

        return blocked

    for name in ("listen", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, no_socket(name))

    real_async_sleep = asyncio.sleep

    async def async_sleep(delay: float, result: Any = None) -> Any:
        if delay <= 0:
            return await real_async_sleep(0, result)
        value = await real_async_sleep(delay, result)  # cancelled: no time was waited for
        refuse(f"asyncio.sleep({delay!r}) ran out")
        return value

    def sync_sleep(seconds: float) -> None:
        if seconds > 0:
            refuse(f"time.sleep({seconds!r})")

    monkeypatch.setattr(asyncio, "sleep", async_sleep)
    monkeypatch.setattr(time, "sleep", sync_sleep)
    yield
    if violations:
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        pytest.fail(f"{violations[0]}{more}: {_ADVICE}", pytrace=False)
