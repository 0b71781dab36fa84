"""The forwarder's persisted cursor: the index of the next audit event to deliver.

Layer: IO edge (one small state file). Written only after an output acknowledged a batch, and
atomically: a temporary file is written and ``fsync``-ed, renamed over the old one, and the
directory is ``fsync``-ed, so after a crash the file holds either the old or the new cursor,
never a torn one. The old cursor means the last batch is delivered again (at-least-once).

Why a state file and not a backend key: the cursor belongs to one forwarder and one receiver,
not to the cluster. Each exporter (the one inside ``bastion start``, a ``bctl audit export`` run
for another SIEM) keeps its own file next to its own output, and moving it costs one backend
write per batch on the auth server's single SQLite writer that also appends the log being read.
A forwarder that must move between hosts can point ``cursor_file`` at shared storage.

Two forwarders on one cursor would race and interleave their output, so ``load`` takes an
exclusive ``flock`` on ``<cursor>.lock`` held until ``close`` (or process exit).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import BadParameter
from bastion.files import write_durable_file

__all__ = ["FileCursor"]


@dataclass(slots=True)
class FileCursor:
    path: Path
    _lock_fd: int | None = None

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise BadParameter(
                f"export cursor {self.path} is in use by another exporter "
                "(the daemon's audit_export or another bctl audit export)"
            ) from None
        self._lock_fd = fd

    async def load(self) -> int:
        """Lock the cursor for this process, then read the saved next index; 0 when the file
        does not exist yet (deliver from the start).

        Raises:
            BadParameter: another exporter holds the cursor, or the file is not a cursor.
        """
        try:
            self._lock()
        except OSError as exc:
            raise BadParameter(f"cannot lock export cursor {self.path}: {exc.strerror}") from None
        return await self.peek()

    async def peek(self) -> int:
        """The saved next index without taking the lock (for status output).

        Raises:
            BadParameter: the file is unreadable or not a cursor.
        """
        try:
            text = await asyncio.to_thread(self.path.read_text)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise BadParameter(f"cannot read export cursor {self.path}: {exc.strerror}") from None
        try:
            value = json.loads(text)["next_index"]
        except (ValueError, KeyError, TypeError):
            value = None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadParameter(
                f"export cursor {self.path} is corrupt; fix it or delete it to re-export everything"
            )
        return value

    async def save(self, next_index: int) -> None:
        """Persist ``next_index`` atomically and durably."""
        if next_index < 0:
            raise ValueError("cursor must not be negative")
        await asyncio.to_thread(self._write, json.dumps({"next_index": next_index}) + "\n")

    def in_use(self) -> bool:
        """Whether an exporter (in any process) holds this cursor right now."""
        if self._lock_fd is not None:
            return True
        try:
            fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing releases a lock we may just have taken
        return False

    async def close(self) -> None:
        """Release the lock (the saved cursor stays)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def _write(self, text: str) -> None:
        write_durable_file(self.path, text)
