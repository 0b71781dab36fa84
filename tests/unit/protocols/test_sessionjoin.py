"""The session-join frames: any chunking decodes to what was encoded; junk is one BadParameter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import BadParameter
from bastion.protocols.sessionjoin import MAX_PAYLOAD, Frame, FrameDecoder, encode_frame
from bastion.protocols.sshroute import encode_join_request, parse_request

frames = st.lists(
    st.builds(Frame, st.sampled_from(["i", "t", "o", "n", "e"]), st.binary(max_size=300)),
    max_size=8,
)


@given(frames, st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_any_chunking_round_trips(sent: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(f.type, f.payload) for f in sent)
    decoder, got, i, n = FrameDecoder(), [], 0, 0
    while i < len(wire):
        step = cuts[n % len(cuts)]
        got += decoder.feed(wire[i : i + step])
        i, n = i + step, n + 1
    assert got == sent


@given(st.binary(max_size=200))
def test_only_bad_parameter_escapes(junk: bytes) -> None:
    try:
        FrameDecoder().feed(junk)
    except BadParameter:
        pass


def test_long_payloads_split_and_oversized_frames_are_refused() -> None:
    big = b"x" * (MAX_PAYLOAD + 10)
    assert b"".join(f.payload for f in FrameDecoder().feed(encode_frame("o", big))) == big
    with pytest.raises(BadParameter):
        FrameDecoder().feed(b"o" + (MAX_PAYLOAD + 1).to_bytes(4, "big"))


def test_the_join_route_line() -> None:
    request = parse_request(encode_join_request("web1", "abc-123", "peer").rstrip(b"\n"))
    assert (request.node, request.join, request.mode, request.login) == (
        "web1",
        "abc-123",
        "peer",
        "",
    )
    with pytest.raises(BadParameter):
        parse_request(b'{"node": "web1", "join": "abc", "mode": "owner"}')
