"""Tests for bastion.protocols.muxframe: a client/server ConnectionPair in memory, state x input
tables, flow control, and fuzzing of the receive path."""

from __future__ import annotations

import itertools
import random
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import LocalProtocolError, RemoteProtocolError
from bastion.protocols import muxframe
from bastion.protocols.muxframe import (
    MAX_PAYLOAD,
    MAX_WINDOW,
    DataReceived,
    Event,
    FrameType,
    GoAway,
    MuxConnection,
    PingReceived,
    PongReceived,
    StreamClosed,
    StreamEOF,
    StreamOpened,
    StreamStats,
    WindowUpdated,
)


def frame(frame_type: int, stream_id: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return struct.pack("!BBII", frame_type, flags, stream_id, len(payload)) + payload


def drain(conn: MuxConnection, data: bytes = b"") -> list[Event]:
    conn.receive_data(data)
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


class ConnectionPair:
    """A client and a server MuxConnection wired together in memory (h11's ConnectionPair)."""

    def __init__(self, **options: int) -> None:
        self.client = MuxConnection("client", **options)
        self.server = MuxConnection("server", **options)

    def peer(self, conn: MuxConnection) -> MuxConnection:
        return self.server if conn is self.client else self.client

    def send(self, conn: MuxConnection, data: bytes) -> list[Event]:
        """Deliver ``data`` written by ``conn`` to its peer and return the peer's events."""
        return drain(self.peer(conn), data)

    def open(self, conn: MuxConnection, header: bytes = b"") -> int:
        stream_id, data = conn.open_stream(header)
        assert self.send(conn, data) == [StreamOpened(stream_id, header)]
        return stream_id


# ------------------------------------------------------------------------ basics


def test_stream_ids_by_role_and_increasing() -> None:
    pair = ConnectionPair()
    assert [pair.open(pair.client) for _ in range(3)] == [1, 3, 5]
    assert [pair.open(pair.server) for _ in range(3)] == [2, 4, 6]


def test_data_eof_close_round_trip_with_stats() -> None:
    pair = ConnectionPair()
    sid = pair.open(pair.client, b"route: node-1")
    wire, sent = pair.client.send_data(sid, b"hello")
    assert sent == 5
    assert pair.send(pair.client, wire) == [DataReceived(sid, b"hello")]
    assert pair.send(pair.client, pair.client.send_eof(sid)) == [StreamEOF(sid)]
    wire, sent = pair.server.send_data(sid, b"bye!")  # the other direction is still open
    assert pair.send(pair.server, wire) == [DataReceived(sid, b"bye!")]
    assert pair.client.stats == {sid: StreamStats(bytes_sent=5, bytes_received=4)}
    closed = pair.send(pair.server, pair.server.close_stream(sid, "session ended"))
    assert closed == [StreamClosed(sid, "session ended", StreamStats(5, 4))]
    assert not pair.client.is_open(sid) and not pair.server.is_open(sid)
    assert pair.send(pair.client, pair.client.close_stream(sid)) == []  # the acknowledgement
    assert pair.client.stats == {} and pair.server.stats == {}
    assert (pair.client.bytes_sent, pair.client.bytes_received) == (5, 4)


def test_simultaneous_close_needs_no_third_frame() -> None:
    pair = ConnectionPair()
    sid = pair.open(pair.client)
    from_client, from_server = pair.client.close_stream(sid), pair.server.close_stream(sid)
    assert pair.send(pair.client, from_client) == []
    assert pair.send(pair.server, from_server) == []
    assert pair.client.stats == {} and pair.server.stats == {}


def test_frames_in_flight_after_our_close_are_discarded() -> None:
    pair = ConnectionPair()
    sid = pair.open(pair.client)
    close = pair.client.close_stream(sid)
    in_flight = pair.server.send_data(sid, b"late")[0] + pair.server.send_eof(sid)
    assert pair.send(pair.server, in_flight) == []
    assert pair.send(pair.client, close) == [StreamClosed(sid, "", StreamStats(4, 0))]
    assert pair.send(pair.server, pair.server.close_stream(sid)) == []
    with pytest.raises(RemoteProtocolError, match="DATA frame on closed stream 1"):
        drain(pair.client, frame(FrameType.DATA, sid, b"x"))


def test_ping_pong_and_go_away() -> None:
    pair = ConnectionPair()
    assert pair.send(pair.server, pair.server.ping(b"12345678")) == [PingReceived(b"12345678")]
    assert pair.send(pair.client, pair.client.pong(b"12345678")) == [PongReceived(b"12345678")]
    sid = pair.open(pair.client)
    assert pair.send(pair.server, pair.server.go_away("restarting")) == [GoAway("restarting")]
    assert pair.server.go_away_sent and pair.client.go_away_received
    with pytest.raises(LocalProtocolError, match="GOAWAY"):
        pair.client.open_stream(b"")
    wire, _ = pair.client.send_data(sid, b"still fine")  # existing streams carry on
    assert pair.send(pair.client, wire) == [DataReceived(sid, b"still fine")]
    # GOAWAY is a promise by its sender too: it opens no new stream either.
    with pytest.raises(LocalProtocolError, match="we sent GOAWAY"):
        pair.server.open_stream(b"")
    with pytest.raises(RemoteProtocolError, match="peer opened stream 2 after its own GOAWAY"):
        drain(pair.client, frame(FrameType.OPEN, 2))


def test_open_in_flight_when_we_sent_go_away_still_arrives() -> None:
    pair = ConnectionPair()
    pair.server.go_away("draining")
    stream_id, wire = pair.client.open_stream(b"raced")
    assert pair.send(pair.client, wire) == [StreamOpened(stream_id, b"raced")]


# ------------------------------------------------------------------------ flow control


def test_send_data_stops_at_the_window_and_resumes_on_update() -> None:
    pair = ConnectionPair(initial_window=1000)
    sid = pair.open(pair.client)
    wire, sent = pair.client.send_data(sid, bytes(1500))
    assert sent == 1000 and pair.client.send_window(sid) == 0
    assert pair.client.send_data(sid, b"more") == (b"", 0)
    events = pair.send(pair.client, wire)
    assert events == [DataReceived(sid, bytes(1000))]
    assert pair.server.data_consumed(sid, 499) == b""  # under half a window: batched
    update = pair.server.data_consumed(sid, 1)
    assert pair.send(pair.server, update) == [WindowUpdated(sid, 500)]
    assert pair.client.send_window(sid) == 500
    assert pair.client.send_data(sid, bytes(500))[1] == 500


def test_large_send_is_split_into_max_payload_frames() -> None:
    pair = ConnectionPair(initial_window=4 * MAX_PAYLOAD)
    sid = pair.open(pair.client)
    data = random.Random(1).randbytes(3 * MAX_PAYLOAD + 17)
    wire, sent = pair.client.send_data(sid, memoryview(data))
    assert sent == len(data)
    events = pair.send(pair.client, wire)
    assert [len(e.data) for e in events if isinstance(e, DataReceived)] == [MAX_PAYLOAD] * 3 + [17]
    assert b"".join(e.data for e in events if isinstance(e, DataReceived)) == data


def test_raw_window_update_and_its_limits() -> None:
    pair = ConnectionPair(initial_window=10)
    sid = pair.open(pair.client)
    assert pair.send(pair.server, pair.server.send_window_update(sid, 5)) == [WindowUpdated(sid, 5)]
    assert pair.client.send_window(sid) == 15
    with pytest.raises(LocalProtocolError):
        pair.server.send_window_update(sid, 0)
    with pytest.raises(LocalProtocolError):
        pair.server.send_window_update(sid, MAX_WINDOW)
    with pytest.raises(LocalProtocolError, match="only 0 are owed"):
        pair.server.data_consumed(sid, 1)


@dataclass
class Side:
    """One end of the transfer simulation: what it must send and what it got."""

    conn: MuxConnection
    wire: bytearray = field(default_factory=bytearray)
    to_send: dict[int, bytes] = field(default_factory=dict)
    offset: dict[int, int] = field(default_factory=dict)
    eof_sent: set[int] = field(default_factory=set)
    received: dict[int, bytearray] = field(default_factory=dict)
    owed: dict[int, int] = field(default_factory=dict)
    eof_seen: set[int] = field(default_factory=set)
    closed_seen: set[int] = field(default_factory=set)


def _transfer(seed: int, streams: int, window: int, max_size: int) -> None:
    rng = random.Random(seed)
    sides = {
        role: Side(MuxConnection(role, initial_window=window)) for role in ("client", "server")
    }
    client, server = sides["client"], sides["server"]
    # plan[header] = (bytes opener->acceptor, bytes acceptor->opener)
    plan = {
        f"stream-{i}".encode(): (rng.randbytes(rng.randrange(max_size)), rng.randbytes(64))
        for i in range(streams)
    }
    for header, (forward, _) in plan.items():
        opener = rng.choice((client, server))
        sid, data = opener.conn.open_stream(header)
        opener.wire += data
        opener.to_send[sid], opener.offset[sid] = forward, 0
        opener.received[sid], opener.owed[sid] = bytearray(), 0

    def deliver(src: Side, dst: Side) -> None:
        cut = rng.randrange(len(src.wire) + 1)
        piece, src.wire[:cut] = bytes(src.wire[:cut]), b""
        dst.conn.receive_data(piece)
        while (event := dst.conn.next_event()) is not None:
            if isinstance(event, StreamOpened):
                dst.to_send[event.stream_id] = plan[event.header][1]
                dst.offset[event.stream_id] = 0
                dst.received[event.stream_id], dst.owed[event.stream_id] = bytearray(), 0
            elif isinstance(event, DataReceived):
                dst.received[event.stream_id] += event.data
                dst.owed[event.stream_id] += len(event.data)
                assert dst.owed[event.stream_id] <= window, "peer overran the window"
            elif isinstance(event, StreamEOF):
                dst.eof_seen.add(event.stream_id)
            elif isinstance(event, StreamClosed):
                dst.closed_seen.add(event.stream_id)
                dst.wire += dst.conn.close_stream(event.stream_id)  # acknowledge
            else:
                assert isinstance(event, WindowUpdated)

    def act(side: Side) -> None:
        for sid, data in side.to_send.items():
            start = side.offset[sid]
            if start < len(data):
                before = side.conn.send_window(sid)
                chunk = rng.randrange(1, 3 * window)
                wire, sent = side.conn.send_data(sid, data[start : start + chunk])
                assert sent == min(chunk, len(data) - start, before)
                side.wire += wire
                side.offset[sid] += sent
            elif sid not in side.eof_sent:
                side.wire += side.conn.send_eof(sid)
                side.eof_sent.add(sid)
            owed = side.owed.get(sid, 0)
            if owed and rng.random() < 0.7:
                consumed = rng.randrange(1, owed + 1)
                side.owed[sid] -= consumed
                side.wire += side.conn.data_consumed(sid, consumed)

    def done() -> bool:
        return all(
            len(side.eof_seen) == streams and len(side.eof_sent) == streams
            for side in (client, server)
        ) and not (client.wire or server.wire)

    for _ in range(100_000):
        if done():
            break
        act(rng.choice((client, server)))
        deliver(client, server)
        deliver(server, client)
    else:
        pytest.fail("transfer did not finish: flow control deadlock")
    for side, other in ((client, server), (server, client)):
        for sid, data in side.to_send.items():
            assert bytes(other.received[sid]) == data, f"stream {sid} corrupted or reordered"
            assert side.conn.stats[sid].bytes_sent == len(data)
    # Close every stream from a random side; the other acknowledges.
    for sid in list(client.to_send):
        closer = rng.choice((client, server))
        closer.wire += closer.conn.close_stream(sid, "done")
    while client.wire or server.wire:
        deliver(client, server)
        deliver(server, client)
    assert client.closed_seen | server.closed_seen == set(client.to_send)
    assert client.conn.stats == {} and server.conn.stats == {}


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**32),
    streams=st.integers(1, 5),
    window=st.sampled_from([512, 1000, 4096, 65536]),
)
def test_concurrent_streams_transfer_in_order_with_flow_control(
    seed: int, streams: int, window: int
) -> None:
    _transfer(seed, streams, window, max_size=window * 6)


def test_megabytes_over_default_window() -> None:
    _transfer(seed=7, streams=3, window=muxframe.DEFAULT_INITIAL_WINDOW, max_size=2_000_000)


# ------------------------------------------------------------------------ state x input

STATES = ["open", "local_eof", "remote_eof", "close_sent", "close_received", "forgotten", "never"]
INPUTS = {
    "DATA": (FrameType.DATA, b"x"),
    "WINDOW_UPDATE": (FrameType.WINDOW_UPDATE, struct.pack("!I", 1)),
    "EOF": (FrameType.EOF, b""),
    "CLOSE": (FrameType.CLOSE, b"why"),
}


def _expected(state: str, input_name: str, sid: int) -> type[Event] | str | None:
    """Event type, None (silently discarded) or an error message fragment."""
    if state == "never":
        return f"{input_name} frame on unknown stream"
    if state == "forgotten":
        return f"{input_name} frame on closed stream"
    if state == "close_received":
        return "after the peer's CLOSE"
    if state == "close_sent":
        return None
    if state == "remote_eof" and input_name in ("DATA", "EOF"):
        return "after the peer's EOF" if input_name == "DATA" else "second EOF"
    return {
        "DATA": DataReceived,
        "WINDOW_UPDATE": WindowUpdated,
        "EOF": StreamEOF,
        "CLOSE": StreamClosed,
    }[input_name]


def _stream_in_state(pair: ConnectionPair, state: str, opener: str) -> int:
    """A stream on pair.server in ``state``; the client is kept consistent where possible."""
    conn, peer = pair.server, pair.client
    if state == "never":
        return 99 if opener == "client" else 100
    sid = pair.open(peer if opener == "client" else conn)
    if state == "local_eof":
        pair.send(conn, conn.send_eof(sid))
    elif state == "remote_eof":
        pair.send(peer, peer.send_eof(sid))
    elif state == "close_sent":
        conn.close_stream(sid)
    elif state == "close_received":
        pair.send(peer, peer.close_stream(sid))
    elif state == "forgotten":
        pair.send(conn, conn.close_stream(sid))
        pair.send(peer, peer.close_stream(sid))
    return sid


@pytest.mark.parametrize("opener", ["client", "server"])
@pytest.mark.parametrize(("state", "input_name"), list(itertools.product(STATES, INPUTS)))
def test_state_by_input(opener: str, state: str, input_name: str) -> None:
    pair = ConnectionPair()
    sid = _stream_in_state(pair, state, opener)
    frame_type, payload = INPUTS[input_name]
    expected = _expected(state, input_name, sid)
    if isinstance(expected, str):
        with pytest.raises(RemoteProtocolError) as info:
            drain(pair.server, frame(frame_type, sid, payload))
        assert expected in str(info.value)
        with pytest.raises(RemoteProtocolError):  # the failure is sticky
            pair.server.next_event()
    elif expected is None:
        assert drain(pair.server, frame(frame_type, sid, payload)) == []
        assert not pair.server.is_open(sid)
        assert (sid in pair.server.stats) is (input_name != "CLOSE")
    else:
        events = drain(pair.server, frame(frame_type, sid, payload))
        assert [type(e) for e in events] == [expected]


@pytest.mark.parametrize("state", STATES)
def test_local_actions_by_state(state: str) -> None:
    pair = ConnectionPair()
    sid = _stream_in_state(pair, state, "client")
    writable = state in ("open", "remote_eof")
    for action in (lambda: pair.server.send_data(sid, b"x"), lambda: pair.server.send_eof(sid)):
        if writable:
            action()
        else:
            with pytest.raises(LocalProtocolError):
                action()
    if state in ("open", "local_eof", "remote_eof", "close_received"):
        pair.server.close_stream(sid)
    with pytest.raises(LocalProtocolError, match="not open"):
        pair.server.close_stream(sid)
    assert pair.server.data_consumed(sid, 0) == b""


# ------------------------------------------------------------------------ violations

VIOLATIONS: list[tuple[bytes, str]] = [
    (frame(0, 1), "unknown frame type 0"),
    (frame(9, 1), "unknown frame type 9"),
    (frame(FrameType.OPEN, 2), "peer opened stream 2, an id it may not allocate"),
    (frame(FrameType.OPEN, 0), "peer opened stream 0"),
    (frame(FrameType.OPEN, 3) + frame(FrameType.OPEN, 1), "ids must increase"),
    (frame(FrameType.OPEN, 1) + frame(FrameType.OPEN, 1), "ids must increase"),
    (frame(FrameType.DATA, 0, b"x"), "DATA frame on stream 0"),
    (frame(FrameType.OPEN, 1) + frame(FrameType.DATA, 1), "empty DATA frame"),
    (
        frame(FrameType.OPEN, 1) + frame(FrameType.DATA, 1, bytes(MAX_PAYLOAD)) * 5,
        "exceeds its flow-control window of 0",
    ),
    (
        frame(FrameType.OPEN, 1) + frame(FrameType.WINDOW_UPDATE, 1, struct.pack("!I", 2**31)),
        "overflows the send window",
    ),
    (
        frame(FrameType.OPEN, 1) + frame(FrameType.WINDOW_UPDATE, 1, struct.pack("!I", 0)),
        "WINDOW_UPDATE of 0",
    ),
    (frame(FrameType.OPEN, 1) + frame(FrameType.WINDOW_UPDATE, 1, b"\x01"), "must be 4 bytes"),
    (frame(FrameType.OPEN, 1) + frame(FrameType.EOF, 1, b"x"), "EOF frame on stream 1 carries"),
    (frame(FrameType.OPEN, 1) + frame(FrameType.CLOSE, 1, b"\xff"), "not valid UTF-8"),
    (frame(FrameType.PING, 1, bytes(8)), "PING frame on stream 1, must be stream 0"),
    (frame(FrameType.PING, 0, bytes(7)), "PING payload must be 8 bytes"),
    (frame(FrameType.PONG, 0, bytes(9)), "PONG payload must be 8 bytes"),
    (frame(FrameType.GOAWAY, 3), "GOAWAY frame on stream 3"),
    (frame(FrameType.GOAWAY, 0, b"\xc3"), "GOAWAY reason is not valid UTF-8"),
    (frame(FrameType.DATA, 2, b"x"), "DATA frame on unknown stream 2"),
]


@pytest.mark.parametrize(("data", "message"), VIOLATIONS)
def test_violations_fail_the_connection(data: bytes, message: str) -> None:
    conn = MuxConnection("server")
    with pytest.raises(RemoteProtocolError) as info:
        drain(conn, data)
    assert message in str(info.value)
    with pytest.raises(RemoteProtocolError, match="^" + str(info.value)[:20]):
        conn.next_event()


def test_oversize_length_fails_from_the_header_alone() -> None:
    conn = MuxConnection("server")
    conn.receive_data(struct.pack("!BBII", FrameType.DATA, 0, 1, MAX_PAYLOAD + 1))
    with pytest.raises(RemoteProtocolError, match="frame length 65537 exceeds 65536"):
        conn.next_event()


def test_max_streams_is_enforced() -> None:
    pair = ConnectionPair(max_streams=2)
    pair.open(pair.client)
    sid = pair.open(pair.client)
    pair.send(pair.server, pair.server.close_stream(sid))
    pair.send(pair.client, pair.client.close_stream(sid))
    pair.open(pair.client)  # a slot was freed by the close handshake
    with pytest.raises(RemoteProtocolError, match="exceeded 2 concurrent streams"):
        pair.send(pair.client, pair.client.open_stream()[1])


def test_flags_are_ignored_for_forward_compatibility() -> None:
    conn = MuxConnection("server")
    events = drain(conn, frame(FrameType.OPEN, 1, b"h", flags=0xFF))
    assert events == [StreamOpened(1, b"h")]


@pytest.mark.parametrize(
    "misuse",
    [
        lambda c: c.send_data(1, b"x"),
        lambda c: c.send_eof(7),
        lambda c: c.close_stream(1),
        lambda c: c.ping(b"short"),
        lambda c: c.open_stream(bytes(MAX_PAYLOAD + 1)),
        lambda c: MuxConnection("peer"),  # type: ignore[arg-type]
        lambda c: MuxConnection("client", initial_window=0),
        lambda c: MuxConnection("client", max_streams=0),
    ],
)
def test_local_misuse_is_a_local_protocol_error(misuse: object) -> None:
    with pytest.raises(LocalProtocolError):
        misuse(MuxConnection("client"))  # type: ignore[operator]


# ------------------------------------------------------------------------ fuzz


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_only_raise_remote_protocol_error(chunks: list[bytes]) -> None:
    conn = MuxConnection("server", initial_window=64)
    try:
        for chunk in chunks:
            drain(conn, chunk)
    except RemoteProtocolError:
        pass


frames = st.builds(
    frame,
    st.integers(0, 9),
    st.integers(0, 6),
    st.binary(max_size=12),
    st.integers(0, 255),
)


@given(st.lists(frames, max_size=12), st.integers(1, 40))
def test_plausible_frame_sequences_only_raise_remote_protocol_error(
    sequence: list[bytes], cut: int
) -> None:
    conn = MuxConnection("server", initial_window=16)
    data = b"".join(sequence)
    try:
        for start in range(0, len(data), cut):
            for event in drain(conn, data[start : start + cut]):
                if isinstance(event, StreamClosed):
                    conn.close_stream(event.stream_id)
    except RemoteProtocolError:
        pass


def test_all_is_exported() -> None:
    public = {n for n, v in vars(muxframe).items() if not n.startswith("_") and isinstance(v, type)}
    public -= {"LocalProtocolError", "RemoteProtocolError", "Final", "Literal", "NoReturn"}
    assert public == {n for n in muxframe.__all__ if n[0].isupper() and not n.isupper()} - {"Event"}


def test_a_reused_receive_buffer_does_not_corrupt_events() -> None:
    # asyncio BufferedProtocol-style callers reuse one bytearray for every read.
    pair = ConnectionPair()
    sid = pair.open(pair.client)
    wire = pair.client.send_data(sid, b"abcdef")[0] + pair.client.send_data(sid, b"ghij")[0]
    scratch = bytearray(wire[:20])  # one whole frame and part of the next
    pair.server.receive_data(scratch)
    first = pair.server.next_event()
    scratch[:] = bytes(len(scratch))
    pair.server.receive_data(memoryview(wire)[20:])
    second = pair.server.next_event()
    assert (first, second) == (DataReceived(sid, b"abcdef"), DataReceived(sid, b"ghij"))
