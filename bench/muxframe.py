"""Benchmark of the reverse-tunnel framing: 1 GiB through a client/server MuxConnection pair.

Run with ``python bench/muxframe.py [MiB]``. Pushes the bytes in 64 KiB chunks through
``send_data`` -> ``receive_data``/``next_event`` -> ``data_consumed`` -> window update back,
all in memory, and prints MB/s next to the floor measured in the same run: the same chunks
through a bare ``bytearray`` append/copy-out/clear loop (what any buffering relay must do at
least). Prints the ratio framing/floor. Each phase stops early if it passes its time budget, so the
whole run stays under 30 s on a slow machine.
"""

from __future__ import annotations

import os
import sys
import time

from bastion.protocols.muxframe import DataReceived, MuxConnection, WindowUpdated

CHUNK = 64 * 1024
PHASE_BUDGET_S = 12.0


def floor(chunk: bytes, count: int) -> tuple[int, float]:
    buffer = bytearray()
    total = 0
    start = time.perf_counter()
    for i in range(count):
        buffer += chunk
        out = bytes(buffer)
        total += len(out)
        buffer.clear()
        if i % 256 == 0 and time.perf_counter() - start > PHASE_BUDGET_S:
            break
    return total, time.perf_counter() - start


def framed(chunk: bytes, count: int) -> tuple[int, float]:
    client, server = MuxConnection("client"), MuxConnection("server")
    stream_id, wire = client.open_stream(b"bench")
    server.receive_data(wire)
    server.next_event()
    total = 0
    start = time.perf_counter()
    for i in range(count):
        view = memoryview(chunk)
        while view:
            wire, sent = client.send_data(stream_id, view)
            view = view[sent:]
            server.receive_data(wire)
            back = b""
            while (event := server.next_event()) is not None:
                if isinstance(event, DataReceived):
                    total += len(event.data)
                    back += server.data_consumed(stream_id, len(event.data))
            if back:
                client.receive_data(back)
                while (update := client.next_event()) is not None:
                    assert isinstance(update, WindowUpdated)
        if i % 256 == 0 and time.perf_counter() - start > PHASE_BUDGET_S:
            break
    return total, time.perf_counter() - start


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    count = mib * 1024 * 1024 // CHUNK
    chunk = os.urandom(CHUNK)
    floor_bytes, floor_s = floor(chunk, count)
    mux_bytes, mux_s = framed(chunk, count)
    floor_rate = floor_bytes / floor_s / 1e6
    mux_rate = mux_bytes / mux_s / 1e6
    print(f"payload: {mib} MiB in {CHUNK // 1024} KiB chunks (budget {PHASE_BUDGET_S:.0f} s/phase)")
    print(f"floor  bytearray copy loop : {floor_bytes / 2**20:8.0f} MiB {floor_rate:9.1f} MB/s")
    print(f"muxframe pair (frame+parse): {mux_bytes / 2**20:8.0f} MiB {mux_rate:9.1f} MB/s")
    print(f"ratio muxframe/floor       : {mux_rate / floor_rate:9.2f}x")


if __name__ == "__main__":
    main()
