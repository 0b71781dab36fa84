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

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bastion.protocols.postgres import LengthFramed

__all__ = ["CopyReport", "CopyScanner", "CopyWatch", "names_copy"]

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
    """One COPY (or MySQL's LOAD DATA LOCAL, :mod:`bastion.protocols.mysql`), for
    ``db.session.copy``."""

    direction: str
    """``in`` (COPY FROM STDIN: client to database) or ``out`` (COPY TO STDOUT)."""
    bytes: int
    """CopyData payload bytes (the rows as the COPY format encodes them)."""
    rows: int | None
    """The database's count (``COPY n``); None when the copy failed."""
    outcome: str
    """``success`` or ``failure``."""

    file: str = ""
    """MySQL's LOAD DATA LOCAL: the file the server asked the client for (else empty)."""
    params: tuple[str | None, ...] = ()

    @property
    def sql(self) -> str:
        """The line recordings and moderators show (as a statement's SQL)."""
        done = f"{self.rows} rows" if self.rows is not None else "failed"
        what = f"LOAD DATA LOCAL INFILE {self.file!r}" if self.file else f"COPY {self.direction}"
        return f"-- {what}: {done}, {self.bytes} bytes"

    def fields(self) -> dict[str, object]:
        """The event's own fields (its outcome is the event's)."""
        own: dict[str, object] = {
            "direction": self.direction,
            "bytes": self.bytes,
            "rows": self.rows,
        }
        if self.file:
            own["file"] = self.file
        return own


class CopyScanner(LengthFramed):
    """Follows the server's stream, chunk by chunk, and reports each COPY once it ends.

    Args:
        copied_in: the client's CopyData payload bytes so far (its scanner's count).
    """

    def __init__(self, copied_in: Callable[[], int], start: int = 0) -> None:
        super().__init__()
        self._copied_in = copied_in
        self._direction = ""
        """The copy under way (``in``/``out``), or ``""``."""
        self._start = start
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


_READY_TAIL: Final = re.compile(rb"Z\x00\x00\x00\x05[ITE]\Z")
"""A ReadyForQuery at the end of a chunk."""
_COPY_RESPONSE: Final = re.compile(rb"[GHW]\x00\x00(..)[\x00\x01](..)", re.DOTALL)
"""A CopyIn/Out/BothResponse's first bytes: length, overall format, column count."""


def names_copy(sql: str) -> bool:
    """Whether ``sql`` may run a COPY to or from the client: it has the word's letters.
    COPY TO STDOUT / FROM STDIN is refused inside functions, so the client's own SQL names it.
    (``lower`` and ``in``: 0.12 us for a pgbench statement; a case-blind regex took 0.42.)"""
    return "copy" in sql.lower()


class CopyWatch:
    """A :class:`CopyScanner` that a session starts only once it ran a statement naming COPY.

    Walking every server message costs ~0.15-0.3 us each in Python: on a large result of small
    rows that is more than the proxy's TLS work (measured: 2.6x its CPU on 1.5 million short
    rows), so a session that never copies must not pay it. The scanner needs a message
    boundary to start at, and the proxy does not frame the server's stream before. It starts:

    * right after a chunk that ends with a ReadyForQuery (the server is idle), where a client
      that waits for each answer (psql, pgbench) sends its COPY;
    * else at the CopyIn/Out/BothResponse that answers the COPY, found by its shape (a
      length that matches its column count): asyncpg describes a statement with a Flush
      (no ReadyForQuery) before it runs the COPY.

    Once started, it stays on for the session.

    What it trusts: those two shapes mark a boundary. Rows crafted to look like them could make
    the scanner misread the COPY reports of the session that sent them; the statements, their
    audit and the session's byte counts do not depend on it.

    Args:
        copied_in: the client's CopyData payload bytes so far (its scanner's count).
    """

    def __init__(self, copied_in: Callable[[], int]) -> None:
        self._copied_in = copied_in
        self.scanner: CopyScanner | None = None
        self._tail = b""
        """The last 6 bytes of the server's last chunk (a ReadyForQuery there: it is idle)."""
        self._mark: int | None = None
        """The client's count when a statement named COPY before the scanner could start."""

    def statement(self, sql: str, mark: int) -> None:
        """The client sent ``sql``; ``mark`` is its CopyData count before the chunk that held
        it (a client may send the data in the same chunk)."""
        if self.scanner is not None or self._mark is not None or not names_copy(sql):
            return
        if _READY_TAIL.match(self._tail):
            self.scanner = CopyScanner(self._copied_in, mark)
        else:
            self._mark = mark

    def feed(self, data: bytes | bytearray) -> list[CopyReport]:
        """The copies ``data`` (the server's next bytes) ends."""
        scanner = self.scanner
        if scanner is not None:
            return scanner.feed(data)
        mark = self._mark
        if mark is None:  # the usual chunk: only its end is kept (a pgbench transaction's
            self._tail = bytes(data[-6:])  # 2-4 us went to a per-chunk check measured in the bench)
            return []
        start = _copy_response(data)
        if start is not None:
            self.scanner = CopyScanner(self._copied_in, mark)
            self._mark = None
            return self.scanner.feed(data[start:])
        if _READY_TAIL.search(data, len(data) - 6) is not None:
            self.scanner = CopyScanner(self._copied_in, mark)
            self._mark = None
        return []


def _copy_response(data: bytes | bytearray) -> int | None:
    """Where the first CopyIn/Out/BothResponse of ``data`` starts, by its shape: length
    ``7 + 2 * columns`` and a format code (0 or 1) per column."""
    for found in _COPY_RESPONSE.finditer(data):
        length = int.from_bytes(found.group(1), "big")
        columns = int.from_bytes(found.group(2), "big")
        start = found.start()
        codes = data[start + 8 : start + 8 + 2 * columns]
        if length == 7 + 2 * columns and len(codes) == 2 * columns and not codes.strip(b"\x00\x01"):
            return start
    return None


def _rows(body: bytes | bytearray) -> int | None:
    """The row count of a ``COPY n`` tag (NUL-terminated); None for another tag."""
    tag = body.rstrip(b"\x00")
    if not tag.startswith(b"COPY "):
        return None
    count = tag[5:]
    return int(count) if count.isdigit() else None
