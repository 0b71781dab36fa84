"""JSON-lines file output with size-based rotation.

Layer: IO edge (files). A batch is acknowledged once it is written and ``fsync``-ed, so a power
cut after the forwarder moves its cursor cannot lose it. Rotation works like logrotate's
``rotate N``: ``audit.jsonl`` -> ``audit.jsonl.1`` -> ... -> ``audit.jsonl.N`` (the oldest is
removed), and a batch never straddles two files. The blocking calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import BadParameter, ConnectionProblem
from bastion.export.formats import json_lines
from bastion.files import fsync_dir
from bastion.types.audit import AuditEvent

__all__ = ["FileOutput", "rotated_names"]


def rotated_names(path: Path, keep: int) -> list[Path]:
    """``[path.1, ..., path.keep]``: where rotated files go, newest first."""
    return [path.with_name(f"{path.name}.{n}") for n in range(1, keep + 1)]


@dataclass(slots=True)
class FileOutput:
    """Append JSON lines to ``path``; rotate when the next batch would pass ``max_bytes``."""

    path: Path
    max_bytes: int = 100 * 1024 * 1024
    keep: int = 10
    """Rotated files kept besides the live one (0: truncate-free rotation deletes the old file)."""
    name: str = "file"
    _fd: int | None = None
    _size: int = 0

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise BadParameter("audit_export file max_bytes must be positive")
        if self.keep < 0:
            raise BadParameter("audit_export file keep must be 0 or more")

    async def send(self, events: Sequence[AuditEvent]) -> None:
        data = json_lines(events)
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            self._close_fd()
            raise ConnectionProblem(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _write(self, data: bytes) -> None:
        fd = self._open()
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
            fd = self._open()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        self._size += len(data)

    def _rotate(self) -> None:
        self._close_fd()
        names = rotated_names(self.path, self.keep)
        if names:
            names[-1].unlink(missing_ok=True)
            for older, newer in zip(reversed(names), reversed(names[:-1]), strict=False):
                if newer.exists():
                    os.replace(newer, older)
            os.replace(self.path, names[0])
        else:
            self.path.unlink()
        fsync_dir(self.path.parent)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def close(self) -> None:
        self._close_fd()
