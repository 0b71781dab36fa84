"""OpenSSH's escape sequences for the built-in client's interactive sessions (pure).

Layer: client edge, no IO. As in ``ssh(1)``, the escape character ``~`` is recognised only at
the beginning of a line (the session start, or after a newline or carriage return typed by the
user): ``~.`` disconnects, ``~?`` lists the escapes, ``~~`` sends one ``~``; any other character
after ``~`` is sent with the ``~`` in front. :class:`EscapeScanner` takes the bytes typed and
returns what to send and what to do, in order; the session pump (:mod:`bastion.client.ssh`)
acts on it.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["ESCAPE_HELP", "Escape", "EscapeScanner"]

ESCAPE_CHAR: Final = 0x7E  # "~"
ESCAPE_HELP: Final = (
    "Supported escape sequences:\r\n"
    " ~.   - terminate connection\r\n"
    " ~?   - this message\r\n"
    " ~~   - send the escape character by typing it twice\r\n"
    "(Note that escapes are only recognized immediately after newline.)\r\n"
)


class Escape(enum.Enum):
    """What an escape sequence asks the session to do."""

    DISCONNECT = "disconnect"
    HELP = "help"


class EscapeScanner:
    """Feed it the bytes typed; get back ``bytes`` to send and :class:`Escape` actions."""

    def __init__(self) -> None:
        self._line_start = True
        self._pending = False  # a "~" at the start of a line, waiting for the next byte

    def feed(self, data: bytes) -> list[bytes | Escape]:
        out: list[bytes | Escape] = []
        chunk = bytearray()
        for byte in data:
            if self._pending:
                self._pending = False
                if byte == ord("."):
                    if chunk:
                        out.append(bytes(chunk))
                    out.append(Escape.DISCONNECT)
                    return out  # nothing typed after ~. is sent
                if byte == ord("?"):
                    if chunk:
                        out.append(bytes(chunk))
                        chunk = bytearray()
                    out.append(Escape.HELP)
                    self._line_start = True  # as OpenSSH: another escape may follow
                    continue
                if byte == ESCAPE_CHAR:
                    chunk.append(ESCAPE_CHAR)
                    self._line_start = False
                    continue
                chunk.append(ESCAPE_CHAR)  # not an escape: the "~" goes out as typed
            elif self._line_start and byte == ESCAPE_CHAR:
                self._pending = True
                continue
            chunk.append(byte)
            self._line_start = byte in (0x0A, 0x0D)
        if chunk:
            out.append(bytes(chunk))
        return out
