"""asciicast v2: the session recording format (https://docs.asciinema.org/manual/asciicast/v2/).

Layer: pure codec (sans-IO): bytes and times in, lines out; lines in, events out. No files, no
clock (the caller passes seconds since the start of the session).

A recording is newline-delimited JSON: one header object (``version``, ``width``, ``height``,
``timestamp``, ``env``, ``title``), then one event array per line, ``[seconds, code, data]``:
``"o"`` output, ``"i"`` input, ``"r"`` resize (``"COLSxROWS"``).

Terminal output arrives as raw bytes, chunked anywhere, also inside a multi-byte UTF-8
character. The encoder decodes each direction incrementally: a partial character waits for the
next chunk, invalid bytes become U+FFFD, so the text of the ``"o"`` events is exactly the
one-shot decoding of all output bytes.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from bastion.errors import BadParameter

__all__ = [
    "MAX_LINE",
    "Cast",
    "CastEncoder",
    "CastEvent",
    "CastHeader",
    "iter_events",
    "parse_cast",
    "parse_header",
]

EventCode = Literal["o", "i", "r", "m"]
MAX_LINE = 1 << 20
"""Longest event line the decoder accepts (the encoder never writes one this long per chunk)."""
_CODES = ("o", "i", "r", "m")


@dataclass(frozen=True, slots=True)
class CastHeader:
    width: int
    height: int
    timestamp: int = 0
    """Unix time (seconds) of the start."""
    env: Mapping[str, str] = field(default_factory=dict)
    """``TERM`` and ``SHELL`` of the recorded terminal."""
    title: str = ""
    participants: tuple[str, ...] = ()
    """Bastion's extension: the session's participants when the recording started (the owner,
    then those who joined, e.g. the moderators a moderated session waited for)."""

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"version": 2, "width": self.width, "height": self.height}
        if self.timestamp:
            doc["timestamp"] = self.timestamp
        if self.env:
            doc["env"] = dict(self.env)
        if self.title:
            doc["title"] = self.title
        if self.participants:
            doc["participants"] = list(self.participants)
        return doc


@dataclass(frozen=True, slots=True)
class CastEvent:
    time: float
    """Seconds since the start."""
    code: EventCode
    data: str

    def resize(self) -> tuple[int, int]:
        """``(cols, rows)`` of a resize event.

        Raises:
            BadParameter: not a resize event, or not ``COLSxROWS``.
        """
        cols, sep, rows = self.data.partition("x")
        if self.code != "r" or not sep or not cols.isdigit() or not rows.isdigit():
            raise BadParameter(f"not a resize event: {self.code!r} {self.data!r}")
        return int(cols), int(rows)


@dataclass(frozen=True, slots=True)
class Cast:
    header: CastHeader
    events: list[CastEvent]

    def output(self) -> str:
        """All output text, in order."""
        return "".join(e.data for e in self.events if e.code == "o")

    def input(self) -> str:
        """All input text, in order (empty when input was not recorded)."""
        return "".join(e.data for e in self.events if e.code == "i")

    @property
    def duration(self) -> float:
        return self.events[-1].time if self.events else 0.0


_float = float.__repr__
_string = json.encoder.encode_basestring


def _line(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")).encode() + b"\n"


class CastEncoder:
    """Turns one session's bytes into asciicast lines.

    Times are clamped to be non-decreasing (a clock step backwards never produces an invalid
    file) and rounded to microseconds.
    """

    def __init__(self, header: CastHeader) -> None:
        self.header = header
        self._decoders = {
            "o": codecs.getincrementaldecoder("utf-8")(errors="replace"),
            "i": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        }
        self._last = 0.0

    def start(self) -> bytes:
        """The header line."""
        return _line(self.header.to_json())

    def _time(self, seconds: float) -> float:
        if not math.isfinite(seconds):
            seconds = self._last
        self._last = max(self._last, float(round(max(seconds, 0.0), 6)))
        return self._last

    def _event(self, seconds: float, code: str, text: str) -> bytes:
        if not text:
            return b""
        # The same bytes as json.dumps([t, code, text], ensure_ascii=False), built directly:
        # this runs for every chunk a session prints (json's own float and string encoders).
        return f'[{_float(self._time(seconds))}, "{code}", {_string(text)}]\n'.encode()

    def output(self, seconds: float, data: bytes) -> bytes:
        """An ``"o"`` line (empty while ``data`` ends inside a character)."""
        return self._event(seconds, "o", self._decoders["o"].decode(data))

    def input(self, seconds: float, data: bytes) -> bytes:
        """An ``"i"`` line (empty while ``data`` ends inside a character)."""
        return self._event(seconds, "i", self._decoders["i"].decode(data))

    def resize(self, seconds: float, cols: int, rows: int) -> bytes:
        return self._event(seconds, "r", f"{cols}x{rows}")

    def finish(self, seconds: float) -> bytes:
        """Flush incomplete characters (as U+FFFD) at the end of the session."""
        out = self._event(seconds, "o", self._decoders["o"].decode(b"", final=True))
        return out + self._event(seconds, "i", self._decoders["i"].decode(b"", final=True))


def _int(doc: Mapping[str, object], name: str, default: int | None = None) -> int:
    value = doc.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadParameter(f"asciicast header: {name!r} must be a non-negative integer")
    return value


def parse_header(line: bytes | str) -> CastHeader:
    """Parse the first line of a recording.

    Raises:
        BadParameter: not JSON, not an object, or not asciicast version 2.
    """
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("not an asciicast recording: the header is not JSON") from None
    if not isinstance(doc, dict) or doc.get("version") != 2:
        raise BadParameter("not an asciicast v2 recording (header version must be 2)")
    env = doc.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise BadParameter("asciicast header: 'env' must map strings to strings")
    title = doc.get("title", "")
    participants = doc.get("participants") or []
    if not isinstance(participants, list) or not all(isinstance(p, str) for p in participants):
        raise BadParameter("asciicast header: 'participants' must be a list of strings")
    return CastHeader(
        width=_int(doc, "width"),
        height=_int(doc, "height"),
        timestamp=_int(doc, "timestamp", 0),
        env=env,
        title=title if isinstance(title, str) else "",
        participants=tuple(participants),
    )


def _event(line: bytes, number: int) -> CastEvent:
    try:
        item = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter(f"asciicast line {number}: not JSON") from None
    if (
        not isinstance(item, list)
        or len(item) != 3
        or not isinstance(item[0], int | float)
        or isinstance(item[0], bool)
        or not math.isfinite(item[0])
        or item[0] < 0
        or item[1] not in _CODES
        or not isinstance(item[2], str)
    ):
        raise BadParameter(f"asciicast line {number}: expected [seconds, code, text]")
    return CastEvent(float(item[0]), item[1], item[2])


def iter_events(data: bytes) -> Iterator[CastEvent]:
    """The events after the header line (blank lines are skipped).

    Raises:
        BadParameter: a line is too long or not a valid event.
    """
    for number, line in enumerate(data.split(b"\n")[1:], start=2):
        if not line.strip():
            continue
        if len(line) > MAX_LINE:
            raise BadParameter(f"asciicast line {number}: longer than {MAX_LINE} bytes")
        yield _event(line, number)


def parse_cast(data: bytes) -> Cast:
    """Parse a whole recording.

    Raises:
        BadParameter: not an asciicast v2 recording, or a malformed event line.
    """
    first, _, _ = data.partition(b"\n")
    if not first.strip():
        raise BadParameter("not an asciicast recording: empty")
    if len(first) > MAX_LINE:
        raise BadParameter("asciicast header: too long")
    return Cast(parse_header(first), list(iter_events(data)))
