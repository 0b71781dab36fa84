"""How much data each COPY of a PostgreSQL session moved, and which way; sans-IO.

Layer: ``protocols`` (pure). The proxy's database route feeds :class:`CopyScanner` every byte
the server sends (the client's COPY data is counted by the client's
:class:`~bastion.protocols.postgres.StatementScanner`, which frames that stream already). The
server messages that matter::

    G  CopyInResponse    a COPY ... FROM STDIN starts: the client sends CopyData (asyncpg
                         sends it right behind the COPY, before this response)
    H  CopyOutResponse   a COPY ... TO STDOUT starts: the server sends CopyData next
    W  CopyBothResponse  (replication) counted as out
    d  CopyData          in a copy out: its payload is counted
    C  CommandComplete   ``COPY n`` ends the copy: n rows
    E  ErrorResponse     ends the copy as failed (a CopyFail, a bad row, a cancel)
    Z  ReadyForQuery     outside a copy: the server is idle; the client's CopyData counted
                         so far belonged to no copy (sent behind a COPY the server refused)

Everything else is skipped by its length: never copied nor buffered (only a header a chunk cuts,
or a copy's CommandComplete, is held). The statement that started a copy is the
``db.session.query`` event before its report in the session's audit order.

The server is not the party we distrust, but its bytes are parsed all the same: a length under 4
stops the scanner (no more reports for that session), never an exception.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bastion.protocols.postgres import LengthFramed

__all__ = ["CopyReport", "CopyScanner"]

_U32: Final = struct.Struct("!I")
_COPY_IN: Final = 0x47  # G
_COPY_OUT: Final = 0x48  # H
_COPY_BOTH: Final = 0x57  # W
_COPY_DATA: Final = 0x64  # d
_COMPLETE: Final = 0x43  # C
_ERROR: Final = 0x45  # E
_READY: Final = 0x5A  # Z
_MAX_TAG: Final = 1024
"""A CommandComplete longer than this is not a COPY's (``COPY 18446744073709551615``)."""


@dataclass(frozen=True, slots=True)
class CopyReport:
    """One COPY, for ``db.session.copy``."""

    direction: str
    """``in`` (COPY FROM STDIN: client to database) or ``out`` (COPY TO STDOUT)."""
    bytes: int
    """CopyData payload bytes (the rows as the COPY format encodes them)."""
    rows: int | None
    """The database's count (``COPY n``); None when the copy failed."""
    outcome: str
    """``success`` or ``failure``."""

    params: tuple[str | None, ...] = ()

    @property
    def sql(self) -> str:
        """The line recordings and moderators show (as a statement's SQL)."""
        done = f"{self.rows} rows" if self.rows is not None else "failed"
        return f"-- COPY {self.direction}: {done}, {self.bytes} bytes"

    def fields(self) -> dict[str, object]:
        """The event's own fields (its outcome is the event's)."""
        return {"direction": self.direction, "bytes": self.bytes, "rows": self.rows}


class CopyScanner(LengthFramed):
    """Follows the server's stream, chunk by chunk, and reports each COPY once it ends.

    Args:
        copied_in: the client's CopyData payload bytes so far (its scanner's count).
    """

    def __init__(self, copied_in: Callable[[], int]) -> None:
        super().__init__()
        self._copied_in = copied_in
        self._direction = ""
        """The copy under way (``in``/``out``), or ``""``."""
        self._start = 0
        """The client's count when the server was last idle, or a copy in ended: a client may
        send its CopyData right behind the COPY, before the server's CopyInResponse."""
        self._out = 0
        self.broken = False
        """The stream stopped making sense (a length under 4): nothing more is reported."""

    def feed(self, data: bytes | bytearray) -> list[CopyReport]:
        """The copies that ``data`` ends, in order."""
        out: list[CopyReport] = []
        if self.broken:
            return out
        resumed = self._resume(data)  # a header, or a copy's CommandComplete, is held whole
        if resumed is None:
            return out
        data, pos = resumed
        size = len(data)
        held = self._buf
        while size - pos >= 5:
            kind = data[pos]
            (length,) = _U32.unpack_from(data, pos + 1)
            if length < 4:
                self.broken = True
                return out
            end = pos + 1 + length
            direction = self._direction
            if kind == _COPY_DATA:
                if direction == "out":
                    self._out += length - 4
            elif direction and kind == _COMPLETE and length <= _MAX_TAG:
                if end > size:  # hold it whole: its tag says how many rows
                    held += memoryview(data)[pos:]
                    self._need = end - pos
                    return out
                out.append(self._done(_rows(data[pos + 5 : end])))
            elif direction and kind == _ERROR:
                out.append(self._done(None))
            elif kind == _COPY_IN:
                self._direction = "in"
            elif kind == _READY and not direction:
                self._start = self._copied_in()  # what a refused COPY's client sent is not counted
            elif kind == _COPY_OUT or kind == _COPY_BOTH:
                self._direction, self._out = "out", 0
            if end > size:
                self._skip = end - size
                return out
            pos = end
        if pos < size:  # a header cut short
            held += memoryview(data)[pos:]
            self._need = 5
        return out

    def _done(self, rows: int | None) -> CopyReport:
        direction, self._direction = self._direction, ""
        if direction == "in":
            now = self._copied_in()
            moved, self._start = now - self._start, now
        else:
            moved = self._out
        outcome = "failure" if rows is None else "success"
        return CopyReport(direction, moved, rows, outcome)


def _rows(body: bytes | bytearray) -> int | None:
    """The row count of a ``COPY n`` tag (NUL-terminated); None for another tag."""
    tag = body.rstrip(b"\x00")
    if not tag.startswith(b"COPY "):
        return None
    count = tag[5:]
    return int(count) if count.isdigit() else None
