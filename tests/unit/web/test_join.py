"""The web join page's pure parts: the mode from the query, what the page
is told of notice and end frames, and the relay of the proxy's reply and frames."""

from __future__ import annotations

import asyncio

import pytest

from bastion.errors import BadParameter
from bastion.protocols.sessionjoin import Frame, encode_frame
from bastion.web.join import _Relay, parse_mode, ws_message


def test_mode_from_the_query() -> None:
    assert parse_mode("") == "observer"
    for mode in ("observer", "moderator", "peer"):
        assert parse_mode(mode) == mode
    with pytest.raises(BadParameter, match="observer, moderator, peer"):
        parse_mode("owner")
    with pytest.raises(BadParameter):
        parse_mode("Peer")


def test_notices_and_the_end_become_messages() -> None:
    assert ws_message(Frame("n", b"bob joined as observer")) == {
        "type": "notice",
        "message": "bob joined as observer",
    }
    assert ws_message(Frame("e", b"terminated by ann")) == {
        "type": "closed",
        "message": "terminated by ann",
    }
    assert ws_message(Frame("e")) == {"type": "closed", "message": "the session ended"}
    assert ws_message(Frame("o", b"x")) is None


def test_relay_reads_the_reply_then_queues_frames() -> None:
    async def run() -> tuple[bytes, list[Frame | None]]:
        relay = _Relay()
        wire = b'{"ok": true}\n' + encode_frame("o", b"hello") + encode_frame("n", b"hi")
        relay.data_received(wire[:5])
        relay.data_received(wire[5:])
        relay.data_received(encode_frame("e", b"bye")[:3])
        relay.data_received(encode_frame("e", b"bye")[3:])
        relay.connection_lost(None)
        got = [relay.frames.get_nowait() for _ in range(relay.frames.qsize())]
        return await relay.reply, got

    line, frames = asyncio.run(run())
    assert line == b'{"ok": true}'
    assert frames == [Frame("o", b"hello"), Frame("n", b"hi"), Frame("e", b"bye"), None]


def test_relay_ends_on_a_bad_frame_and_on_an_early_close() -> None:
    async def run() -> tuple[list[Frame | None], BaseException | None]:
        relay = _Relay()
        relay.data_received(b'{"ok": true}\nZ\x00\x00\x00\x00')
        got = [relay.frames.get_nowait() for _ in range(relay.frames.qsize())]
        early = _Relay()
        early.connection_lost(None)
        try:
            await early.reply
        except Exception as exc:
            return got, exc
        return got, None

    frames, exc = asyncio.run(run())
    assert frames[-1] is None and isinstance(frames[0], Frame) and frames[0].type == "e"
    assert exc is not None and "closed" in str(exc)
