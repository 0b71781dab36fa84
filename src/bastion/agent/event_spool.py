"""A durable, ordered on-disk queue of an agent's audit events (issue 7: agents lose nothing when
auth is unreachable or the node restarts).

Layer: agent. Files in the spool directory (``<data_dir>/node/event-spool``, mode 0700):

* ``events.jsonl``: one JSON object per line, each with a unique ``event_id`` (32 hex digits
  made here; auth dedupes on it). :meth:`EventSpool.append` returns only after the line is
  written *and fsynced*; concurrent appends share one write and one fsync (group commit).
* ``acked``: the byte offset up to which auth acknowledged the events (written to a temporary
  file, fsynced, renamed). It only moves after auth answered, so a crash in between resends the
  last batch, and auth's dedupe keeps the log free of duplicates (at-least-once delivery,
  exactly-once in the audit log).
* ``rejected.jsonl``: events auth refused (with the reason) and unreadable lines, kept for an
  operator instead of blocking the queue.

Recovery at open: a torn last line (the node died inside a write, so that ``append`` never
returned) is cut off; an ``acked`` offset beyond the file is treated as 0 (resend all).
Compaction when every event is acknowledged (or the acknowledged prefix is large): ``acked`` is
set to 0 *before* the file is truncated or replaced, so a crash between the two steps resends
(deduped), never skips.

Disk bound (``max_bytes``, unacknowledged bytes): above 90% new events are refused with
:class:`~bastion.errors.LimitExceeded` (so a session cannot start: its ``session.start`` is not
durable), except events that close something already running (``session.end``, ``exec``,
``session.terminated``), which may use the last 10%. Each refusal is logged as an error. An
event is never dropped silently.

All file IO runs on one dedicated thread, so writes, reads and compaction never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from bastion.errors import BadParameter, BastionError, LimitExceeded
from bastion.tasks import spawn

__all__ = [
    "CLOSING_TYPES",
    "DEFAULT_MAX_BYTES",
    "EventSpool",
    "SpooledEvent",
    "new_event_id",
    "parse_lines",
]

log = structlog.get_logger("bastion.agent.event_spool")
T = TypeVar("T")

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
CLOSING_TYPES = frozenset({"session.end", "exec", "session.terminated"})
"""Events that may use the reserve (the last 10% of ``max_bytes``): they close what runs."""
READ_BYTES = 512 * 1024
"""At most this much is read per batch (whole lines; one longer line is read alone), below
auth's default request limit (1 MiB)."""
COMPACT_BYTES = 8 * 1024 * 1024
"""An acknowledged prefix at least this long is cut off even when events are still queued."""
EVENTS, ACKED, REJECTED = "events.jsonl", "acked", "rejected.jsonl"


def _write_error(exc: BaseException, directory: Path) -> BastionError:
    """The error an ``append`` whose write failed raises (never a bare OSError)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        log.error("audit event spool: the disk is full", spool=str(directory))
        return LimitExceeded(f"no space left for the audit event spool {directory}")
    log.error("audit event spool: write failed", spool=str(directory), error=str(exc))
    return BastionError(f"cannot write the audit event spool {directory}: {exc}")


def new_event_id() -> str:
    """A fresh event id: 32 lowercase hex digits."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class SpooledEvent:
    end: int
    """The byte offset just past this event's line: acknowledge up to here."""
    raw: bytes
    event: dict[str, Any] | None
    """The parsed event, or None for a line that is not a JSON object with an ``event_id``."""


def parse_lines(data: bytes, base: int) -> tuple[list[SpooledEvent], int]:
    """Split spool bytes (read at offset ``base``) into events; returns them and the offset just
    past the last complete line (a trailing partial line is left for later). Pure."""
    out: list[SpooledEvent] = []
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        raw = data[pos:nl]
        pos = nl + 1
        if not raw.strip():
            continue
        event: dict[str, Any] | None
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        ok = isinstance(parsed, dict) and isinstance(parsed.get("event_id"), str)
        event = parsed if ok else None
        out.append(SpooledEvent(end=base + pos, raw=raw, event=event))
    return out, base + pos


class EventSpool:
    """The on-disk queue. Open it (recovers), :meth:`append`, :meth:`read` from the head,
    :meth:`ack`; :meth:`close` when done."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1024:
            raise BadParameter("the event spool needs max_bytes >= 1024")
        self.directory = directory
        self.max_bytes = max_bytes
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-spool")
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._pending_bytes = 0
        self._flusher: asyncio.Task[None] | None = None
        self._size = 0
        """Bytes of complete, fsynced lines in events.jsonl (IO thread state)."""
        self._acked = 0
        self._fd = -1
        self._recover()

    # ---- state (read on the event loop; the IO thread is the only writer) ---------------------

    @property
    def unacked_bytes(self) -> int:
        return self._size - self._acked

    @property
    def empty(self) -> bool:
        return self._size <= self._acked and not self._pending

    # ---- appending ----------------------------------------------------------------------------

    async def append(self, event: Mapping[str, Any]) -> str:
        """Store ``event`` durably (fsynced) and return its ``event_id`` (made when absent).

        Raises:
            LimitExceeded: the spool is full (see the module doc for the reserve), or the disk.
            BadParameter: the event cannot be encoded as JSON.
            BastionError: the write failed (nothing of it stays in the spool).
        """
        return (await self.append_many([event]))[0]

    async def append_many(self, events: Sequence[Mapping[str, Any]]) -> list[str]:
        """Store ``events`` durably, in order, all or none of them, in one write and one fsync
        (a session's statements: not one fsync each); returns their event ids.

        Raises:
            LimitExceeded: they do not fit (the reserve is kept unless all are closing events).
            BadParameter: an event cannot be encoded as JSON (none is stored).
            BastionError: the write failed (nothing of it stays in the spool).
        """
        lines: list[bytes] = []
        ids: list[str] = []
        closing = True
        for event in events:
            record = dict(event)
            record.setdefault("event_id", new_event_id())
            try:
                lines.append(json.dumps(record, separators=(",", ":"), default=str).encode())
            except (TypeError, ValueError) as exc:
                raise BadParameter(f"audit event cannot be spooled: {exc}") from None
            ids.append(str(record["event_id"]))
            closing = closing and record.get("type") in CLOSING_TYPES
        if not lines:
            return []
        data = b"\n".join(lines) + b"\n"
        used = self.unacked_bytes + self._pending_bytes + len(data)
        limit = self.max_bytes if closing else self.max_bytes * 9 // 10
        if used > limit:
            log.error(
                "audit event spool is full: refusing the event (auth unreachable for too long?)",
                event_type=events[0].get("type"),
                spool=str(self.directory),
                unacked_bytes=self.unacked_bytes,
                max_bytes=self.max_bytes,
            )
            raise LimitExceeded(
                f"the audit event spool {self.directory} is full ({self.max_bytes} bytes "
                "waiting for auth): new sessions are refused until auth is reachable"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((data, future))
        self._pending_bytes += len(data)
        if self._flusher is None or self._flusher.done():
            # a task of its own (referenced here): a cancelled caller never interrupts a write
            self._flusher = spawn(self._flush(), "event-spool-flush")
        await future
        return ids

    async def _flush(self) -> None:
        """Write every pending line with one fsync, until none is pending (group commit)."""
        while self._pending:
            batch, self._pending = self._pending, []
            data = b"".join(line for line, _ in batch)
            try:
                await self._run(self._write, data)
            except BaseException as exc:
                err = _write_error(exc, self.directory)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                if not isinstance(exc, Exception):
                    raise
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
            finally:
                self._pending_bytes -= len(data)

    # ---- reading and acknowledging ------------------------------------------------------------

    async def read(self) -> list[SpooledEvent]:
        """The oldest unacknowledged events (up to ~1 MiB), in order; [] when none."""
        return await self._run(self._read)

    async def ack(self, end: int) -> None:
        """Everything before offset ``end`` was delivered (or rejected): never resend it."""
        await self._run(self._ack, end)

    async def reject(self, event: SpooledEvent, reason: str) -> None:
        """Keep a refused event in ``rejected.jsonl`` (with the reason) before it is acked."""
        log.error("audit event refused; kept in rejected.jsonl", reason=reason)
        await self._run(self._reject, event.raw, reason)

    def close(self) -> None:
        self._io.shutdown(wait=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # ---- the IO thread ------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        result: T = await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)
        return result

    def _recover(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / EVENTS
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        size = os.fstat(self._fd).st_size
        complete = size
        if size:
            # find the last newline; anything after it is a torn write (append never returned)
            chunk = 4096
            tail_end = size
            complete = 0
            while tail_end > 0:
                start = max(0, tail_end - chunk)
                data = os.pread(self._fd, tail_end - start, start)
                nl = data.rfind(b"\n")
                if nl >= 0:
                    complete = start + nl + 1
                    break
                tail_end = start
        if complete != size:
            log.warning("audit event spool: cutting off a torn last line", bytes=size - complete)
            os.ftruncate(self._fd, complete)
            os.fsync(self._fd)
        self._size = complete
        self._acked = self._read_acked()
        if self._acked > self._size:
            self._acked = 0  # crashed while compacting: resend everything (auth dedupes)
        if self._size > self._acked:
            log.info("audit event spool: replaying queued events", bytes=self._size - self._acked)

    def _read_acked(self) -> int:
        try:
            return max(0, int((self.directory / ACKED).read_text().strip() or 0))
        except FileNotFoundError:
            return 0
        except ValueError:
            log.error("audit event spool: unreadable acked offset; resending everything")
            return 0

    def _write(self, data: bytes) -> None:
        before = self._size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, before)  # never leave a torn line in front of later ones
            raise
        self._size = before + len(data)

    def _read(self) -> list[SpooledEvent]:
        want = self._size - self._acked
        if want <= 0:
            return []
        data = os.pread(self._fd, min(want, READ_BYTES), self._acked)
        events, _ = parse_lines(data, self._acked)
        if not events and want > len(data):  # one line longer than READ_BYTES
            nl = os.pread(self._fd, want, self._acked).find(b"\n")
            events, _ = parse_lines(os.pread(self._fd, nl + 1, self._acked), self._acked)
        return events

    def _ack(self, end: int) -> None:
        end = min(end, self._size)
        if end >= self._size:
            self._store_acked(0)  # first: a crash before the truncate resends, never skips
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._size = self._acked = 0
        elif end >= COMPACT_BYTES:
            self._compact(end)
        else:
            self._store_acked(end)
            self._acked = end

    def _compact(self, end: int) -> None:
        """Keep only the events after ``end`` (a crash anywhere resends, never skips)."""
        path = self.directory / EVENTS
        fresh = path.with_suffix(".new")
        tail = os.pread(self._fd, self._size - end, end)
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            os.write(fd, tail)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._store_acked(0)
        os.replace(fresh, path)
        self._fsync_dir()
        os.close(self._fd)
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND)
        self._size, self._acked = len(tail), 0

    def _store_acked(self, offset: int) -> None:
        tmp = self.directory / (ACKED + ".tmp")
        with tmp.open("w") as out:
            out.write(f"{offset}\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.directory / ACKED)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _reject(self, raw: bytes, reason: str) -> None:
        line = json.dumps({"reason": reason, "line": raw.decode(errors="replace")}) + "\n"
        fd = os.open(self.directory / REJECTED, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
