"""Benchmark of session recording on the node's data path, against asciinema's own writer.

Run with ``python bench/recording.py [MiB]`` (default 64). The same terminal output (1 KiB
chunks of ASCII and UTF-8 text, some split inside a character) goes through:

* ``bare``: :class:`~bastion.agent.session.SessionStream` with no observer (the floor: byte
  counting and delivery to the sink);
* ``bastion``: the same stream with the :class:`~bastion.agent.recorder.SessionRecorder`
  (incremental UTF-8 decoding, asciicast v2 lines, written through to the spool file, SHA-256,
  fsync once a second, final fsync + rename);
* ``asciinema``: asciinema 2.x's ``asciicast.v2.writer`` (the peer: the same format, decoder and
  line-buffered writes, no hashing, no fsync), run by the system Python in a subprocess on the
  same data, timed inside that process.

Prints MB/s and events/s of each and the ratio bastion/asciinema.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bastion.agent.recorder import SessionRecorder
from bastion.agent.session import SessionMeta, SessionStream
from bastion.clock import SystemClock
from bastion.recording.spool import Spool

CHUNK = 1024
PEER = r"""
import sys, time
from asciinema.asciicast import v2
data = open(sys.argv[1], "rb").read()
chunk = int(sys.argv[3])
start = time.perf_counter()
with v2.writer(sys.argv[2], width=80, height=24) as w:
    t0 = time.monotonic()
    for i in range(0, len(data), chunk):
        w.write_stdout(time.monotonic() - t0, data[i:i + chunk])
print(time.perf_counter() - start)
"""


def payload(mib: int) -> bytes:
    line = "total 42  drwxr-xr-x  héllo wörld ✓ \x1b[32mgreen\x1b[0m 0123456789 abcdef\r\n"
    raw = line.encode()
    return (raw * (mib * 1024 * 1024 // len(raw) + 1))[: mib * 1024 * 1024]


async def through_stream(data: bytes, record: Path | None) -> float:
    meta = SessionMeta(
        session_id=str(uuid.uuid4()), user="bench", login="root", node="n", remote_addr="",
        kind="shell", pty=True, term="xterm", record=True,
    )  # fmt: skip
    stream = SessionStream(meta, lambda _d, _e: None)
    if record is not None:
        stream.observers.append(SessionRecorder(Spool(record), SystemClock(), "c", lambda: None))
    start = time.perf_counter()
    await stream.start()
    for i in range(0, len(data), CHUNK):
        stream.output(data[i : i + CHUNK])
    await stream.end()
    return time.perf_counter() - start


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    data = payload(mib)
    events = (len(data) + CHUNK - 1) // CHUNK
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("bare", asyncio.run(through_stream(data, None))))
        rows.append(("bastion", asyncio.run(through_stream(data, Path(tmp) / "spool"))))
        system_python = shutil.which("python3", path="/usr/bin")
        if system_python and Path("/usr/lib/python3/dist-packages/asciinema").is_dir():
            src = Path(tmp) / "data.bin"
            src.write_bytes(data)
            out = subprocess.run(
                [system_python, "-c", PEER, str(src), str(Path(tmp) / "peer.cast"), str(CHUNK)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            rows.append(("asciinema", float(out.stdout.strip())))
    result = {}
    for name, seconds in rows:
        mbps = len(data) / seconds / 1e6
        result[name] = {"seconds": round(seconds, 3), "MB/s": round(mbps, 1),
                        "events/s": round(events / seconds)}  # fmt: skip
        print(f"{name:10s} {seconds:7.3f} s  {mbps:8.1f} MB/s  {events / seconds:10.0f} events/s")
    if "asciinema" in result:
        ratio = result["asciinema"]["seconds"] / result["bastion"]["seconds"]
        print(f"bastion recorder throughput / asciinema writer: {ratio:.2f}x")
        result["ratio_bastion_over_asciinema"] = round(ratio, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
