import asyncio

from bastion.tunnel.memory import HIGH_WATER, memory_pair


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.lost = asyncio.get_event_loop().create_future()
        self.paused = 0
        self.resumed = 0

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1


def pair():
    a, b = memory_pair()
    pa, pb = Recorder(), Recorder()
    a.set_protocol(pa)
    b.set_protocol(pb)
    return a, b, pa, pb


async def test_bytes_flow_in_order_both_ways():
    a, b, pa, pb = pair()
    for i in range(100):
        a.write(bytes([i]) * 10)
    b.write(b"back")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert bytes(pb.data) == b"".join(bytes([i]) * 10 for i in range(100))
    assert bytes(pa.data) == b"back"


async def test_paused_reader_applies_backpressure_to_writer():
    a, b, pa, pb = pair()
    b.pause_reading()
    a.write(b"x" * (HIGH_WATER + 1))
    assert pa.paused == 1
    await asyncio.sleep(0)
    assert pb.data == b""
    b.resume_reading()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(pb.data) == HIGH_WATER + 1 and pa.resumed == 1


async def test_close_reaches_both_protocols():
    a, b, pa, pb = pair()
    a.close()
    assert await asyncio.wait_for(pa.lost, 1) is None
    assert await asyncio.wait_for(pb.lost, 1) is None
    assert a.is_closing() and b.is_closing()
    a.write(b"ignored after close")
