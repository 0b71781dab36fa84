"""Database session recordings: the statements of one session as an asciicast v2 recording.

Layer: pure (sans-IO): values in, lines out. No files, no clock (the caller passes seconds
since the start of the session). The proxy's database route
(:mod:`bastion.proxy.db_route`) writes these lines to the recording spool and uploads them
like an SSH recording, so ``bsh recordings ls`` lists the session (kind ``db``) and ``bsh play``
shows it as a timed list of statements.

The header is an ordinary asciicast v2 header (players ignore the extra keys) with a
``bastion`` object naming the session: ``kind: "db"``, ``user``, ``db_service``, ``db_user``,
``db_name``. Each audited statement is one output event::

    [0.123456, "o", "SELECT $1 -- params: [\\"42\\"]\\r\\n"]

The statement and its parameters are the ones ``db.session.query`` carries (the same
redaction: passwords in ``ALTER USER ... PASSWORD`` and, with ``redact_params``, the parameter
values). Line breaks inside a statement become ``\\r\\n`` so a terminal shows them in place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DbCastBuilder", "DbCastHeader", "statement_text"]

WIDTH = 160
HEIGHT = 48


@dataclass(frozen=True, slots=True)
class DbCastHeader:
    user: str
    """The Bastion user whose session it is."""
    db_service: str
    db_user: str
    db_name: str
    protocol: str = ""
    """``postgres`` or ``mysql``."""
    timestamp: int = 0
    """Unix time (seconds) of the start."""

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"version": 2, "width": WIDTH, "height": HEIGHT}
        if self.timestamp > 0:
            doc["timestamp"] = self.timestamp
        doc["title"] = f"db {self.db_user}@{self.db_service}/{self.db_name} ({self.user})"
        doc["bastion"] = {
            "kind": "db",
            "user": self.user,
            "db_service": self.db_service,
            "db_user": self.db_user,
            "db_name": self.db_name,
            "protocol": self.protocol,
        }
        return doc


def statement_text(sql: str, params: Sequence[str | None] = ()) -> str:
    """One statement as the recording shows it: ``sql -- params: [...]`` and a line break."""
    text = sql.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    if params:
        text += " -- params: " + json.dumps(list(params), ensure_ascii=False)
    return text + "\r\n"


_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))
"""One encoder for every line: ``json.dumps`` with options builds a new one per call (a
database session writes a line per statement)."""


_string = json.encoder.encode_basestring
"""The string encoder of ``_LINE_ENCODER`` (``ensure_ascii=False``)."""


def _line(obj: object) -> bytes:
    text = _LINE_ENCODER.encode(obj)
    # A lone surrogate cannot be UTF-8: written as its JSON escape, the line stays valid JSON.
    return text.encode("utf-8", "backslashreplace") + b"\n"


class DbCastBuilder:
    """The asciicast lines of one database session.

    Times are clamped to be non-decreasing and finite (a clock step backwards never produces an
    invalid file) and rounded to microseconds.
    """

    def __init__(self, header: DbCastHeader) -> None:
        self.header = header
        self._last = 0.0

    def start(self) -> bytes:
        """The header line."""
        return _line(self.header.to_json())

    def _time(self, seconds: float) -> float:
        if not math.isfinite(seconds):
            seconds = self._last
        self._last = max(self._last, float(round(max(seconds, 0.0), 6)))
        return self._last

    def statement(self, seconds: float, sql: str, params: Sequence[str | None] = ()) -> bytes:
        """The event line of one statement run ``seconds`` after the start: the bytes of
        ``_line([time, "o", text])``, put together directly (a line per statement; the
        encoder's list walk cost more than the rest of the line)."""
        text = _string(statement_text(sql, params))
        line = f'[{self._time(seconds)!r}, "o", {text}]\n'
        return line.encode("utf-8", "backslashreplace")
