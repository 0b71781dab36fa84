"""The in-memory transport pair the protocol tests share."""

from __future__ import annotations

import asyncio

from bastion.testing.pipes import pipe_pair


class Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data


async def test_bytes_reach_the_peer_and_a_black_hole_swallows_them() -> None:
    a, b = pipe_pair()
    got = Collect()
    b.set_protocol(got)
    a.write(b"hello")
    await asyncio.sleep(0)
    assert got.data == b"hello"
    a.black_hole = True
    a.write(b"lost")
    await asyncio.sleep(0)
    assert got.data == b"hello"
    assert a.get_extra_info("peername") == ("10.0.0.2", 5000)
