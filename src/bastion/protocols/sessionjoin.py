"""The session-join stream: frames between a joining participant and the node running the session.

Layer: ``protocols`` (pure, sans-IO). After the ``bastion-ssh/1`` route line with ``"join"``
(:mod:`bastion.protocols.sshroute`) the proxy relays these frames between ``bsh join`` and the
node agent (:mod:`bastion.agent.session_join`)::

    frame = type (1 byte) | length (4 bytes, big endian) | payload (length bytes, <= 64 KiB)

    client -> node   i  input (keystrokes; only a peer's reach the session)
                     t  terminate (only a moderator's ends the session)
    node -> client   o  session output (what the owner's terminal shows)
                     n  notice (UTF-8 text: who joined or left, paused, resumed)
                     e  end (UTF-8 reason); the node closes the stream after it
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Literal

from bastion.errors import BadParameter

__all__ = [
    "DB_SESSIONS_HOST",
    "JOIN_STREAM",
    "MAX_PAYLOAD",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "encode_frame",
]

JOIN_STREAM: Final = "session_join"
"""The reverse-tunnel stream type of a join (proxy to node)."""
DB_SESSIONS_HOST: Final = "db-sessions"
"""The host id of the proxy's moderated database sessions: their trackers name it, ``bsh join``
sends it as the node, and the proxy serves such a join itself (:mod:`bastion.proxy.db_moderation`:
the statements of the session are its output) instead of dialing a node."""
FrameType = Literal["i", "t", "o", "n", "e"]
MAX_PAYLOAD: Final = 64 * 1024
_TYPES: Final = frozenset(b"itone")
_HEADER = struct.Struct(">cI")


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    payload: bytes = b""


def encode_frame(kind: FrameType, payload: bytes = b"") -> bytes:
    """One frame; a payload longer than :data:`MAX_PAYLOAD` becomes several frames."""
    if len(payload) <= MAX_PAYLOAD:
        return _HEADER.pack(kind.encode(), len(payload)) + payload
    return b"".join(
        encode_frame(kind, payload[i : i + MAX_PAYLOAD])
        for i in range(0, len(payload), MAX_PAYLOAD)
    )


class FrameDecoder:
    """Bytes in (any chunking), frames out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Raises: BadParameter on an unknown frame type or an oversized payload."""
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self._buf)
            if kind[0] not in _TYPES:
                raise BadParameter(f"session join: unknown frame type {kind!r}")
            if size > MAX_PAYLOAD:
                raise BadParameter(f"session join: frame of {size} bytes is too long")
            end = _HEADER.size + size
            if len(self._buf) < end:
                break
            payload = bytes(self._buf[_HEADER.size : end])
            del self._buf[:end]
            frames.append(Frame(kind.decode(), payload))
        return frames
