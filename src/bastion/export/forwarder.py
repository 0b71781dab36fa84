"""The audit forwarder: read events in log order, deliver them in batches, then move the cursor.

Layer: orchestration over three small protocols declared here (an event source, an output, a
cursor store); it knows no file, socket or backend. Delivery is at-least-once:

1. read up to ``batch_size`` events starting at the cursor (the next index to deliver);
2. check they are exactly indexes ``cursor, cursor+1, ...`` (a hole is an error, never skipped);
3. send the batch; on failure wait (capped exponential backoff) and send the SAME batch again,
   for as long as it takes;
4. only after the output acknowledged it, persist ``cursor + len(batch)``.

A crash between 3 and 4 re-sends the last batch after restart (duplicates, never a gap); outputs
make duplicates harmless where the receiver allows it (Elasticsearch ``_id`` = event id).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import structlog

from bastion.errors import BastionError, ConnectionProblem, LocalProtocolError
from bastion.types.audit import AuditEvent

__all__ = [
    "CursorStore",
    "EventSource",
    "Forwarder",
    "ForwarderStatus",
    "Output",
    "backoff_delay",
]

log = structlog.get_logger("bastion.export")


class EventSource(Protocol):
    async def read_from(self, index: int, limit: int) -> list[AuditEvent]:
        """Up to ``limit`` events with index >= ``index``, in index order, no holes."""
        ...


class Output(Protocol):
    name: str

    async def send(self, events: Sequence[AuditEvent]) -> None:
        """Deliver the batch or raise (BastionError); returning means acknowledged."""
        ...

    async def close(self) -> None: ...


class CursorStore(Protocol):
    async def load(self) -> int: ...

    async def save(self, next_index: int) -> None: ...

    async def close(self) -> None: ...


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): base, 2*base, 4*base ... cap."""
    if attempt < 1:
        return 0.0
    return float(min(cap, base * 2.0 ** min(attempt - 1, 62)))


@dataclass(slots=True)
class ForwarderStatus:
    """What the forwarder is doing, for logs and status output."""

    next_index: int = 0
    delivered: int = 0
    """Events acknowledged by the output since this forwarder started."""
    batches: int = 0
    failing_since: float | None = None
    """Monotonic time of the first failed attempt of the batch being retried (None: healthy)."""
    last_error: str = ""
    attempts: int = 0


Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


def check_contiguous(events: Sequence[AuditEvent], start: int) -> None:
    """Raise unless ``events`` carry exactly the indexes ``start, start+1, ...``.

    Raises:
        LocalProtocolError: a hole (a deleted event), a reordering or an event without index in
            what the log returned; exporting past it would skip events, so the forwarder stops
            there instead (``bctl audit verify`` names the damage).
    """
    for offset, event in enumerate(events):
        index = event.index
        if index != start + offset:
            raise LocalProtocolError(
                f"audit export: expected event index {start + offset}, the log returned {index}"
            )


@dataclass(slots=True)
class Forwarder:
    source: EventSource
    output: Output
    cursor: CursorStore
    batch_size: int = 500
    poll_interval: float = 1.0
    """Seconds to wait for new events once caught up."""
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    sleep: Sleep = asyncio.sleep
    status: ForwarderStatus = field(default_factory=ForwarderStatus)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    async def run(self) -> None:
        """Deliver forever (until cancelled). Never raises: receiver and backend failures are
        retried with backoff; anything else (a hole in the log, a corrupt cursor file) is logged
        as an error and retried at the longest backoff, so the auth service keeps running and
        the export resumes by itself once the cause is fixed."""
        try:
            while True:
                try:
                    self.status.next_index = await self.cursor.load()
                    log.info(
                        "audit export started",
                        output=self.output.name,
                        next_index=self.status.next_index,
                    )
                    while True:
                        if not await self._step(max_attempts=None):
                            await self.sleep(self.poll_interval)
                except Exception as exc:  # logged; the daemon must not die of it
                    self._failed(exc, "export", self.status.attempts + 1, error=True)
                    await self.output.close()
                    await self.sleep(self.backoff_cap)
        finally:
            await self.output.close()
            await self.cursor.close()

    async def run_once(self, max_attempts: int | None = 8) -> int:
        """Deliver everything there is now, then return how many events were delivered.

        Raises:
            ConnectionProblem: a batch still failed after ``max_attempts`` tries (the cursor
                stays at that batch).
        """
        self.status.next_index = await self.cursor.load()
        before = self.status.delivered
        try:
            while await self._step(max_attempts=max_attempts):
                pass
        finally:
            await self.output.close()
            await self.cursor.close()
        return self.status.delivered - before

    async def _step(self, max_attempts: int | None) -> bool:
        """Deliver one batch. Returns False when there was nothing to deliver."""
        start = self.status.next_index
        events = await self._retry(
            lambda: self.source.read_from(start, self.batch_size), "read", max_attempts
        )
        if not events:
            return False
        check_contiguous(events, start)
        await self._retry(lambda: self.output.send(events), "send", max_attempts)
        next_index = start + len(events)
        await self.cursor.save(next_index)
        self.status.next_index = next_index
        self.status.delivered += len(events)
        self.status.batches += 1
        log.debug("audit export batch delivered", count=len(events), next_index=next_index)
        return True

    async def _retry(
        self, action: Callable[[], Awaitable[T]], what: str, max_attempts: int | None
    ) -> T:
        attempt = 0
        while True:
            try:
                result = await action()
            except (BastionError, OSError) as exc:
                if isinstance(exc, LocalProtocolError):
                    raise
                attempt += 1
                self._failed(exc, what, attempt)
                if max_attempts is not None and attempt >= max_attempts:
                    raise ConnectionProblem(
                        f"audit export to {self.output.name} failed {attempt} times, "
                        f"cursor stays at {self.status.next_index}: {exc}"
                    ) from exc
                await self.sleep(backoff_delay(attempt, self.backoff_base, self.backoff_cap))
                continue
            if attempt:
                down = time.monotonic() - (self.status.failing_since or time.monotonic())
                log.info(
                    "audit export recovered",
                    output=self.output.name,
                    attempts=attempt + 1,
                    seconds=round(down, 1),
                )
            self.status.failing_since, self.status.last_error, self.status.attempts = None, "", 0
            return result

    def _failed(self, exc: BaseException, what: str, attempt: int, error: bool = False) -> None:
        if self.status.failing_since is None:
            self.status.failing_since = time.monotonic()
        self.status.last_error, self.status.attempts = str(exc) or type(exc).__name__, attempt
        (log.error if error else log.warning)(
            "audit export failed, will retry",
            output=self.output.name,
            action=what,
            attempt=attempt,
            next_index=self.status.next_index,
            error=self.status.last_error,
        )
