"""Resident memory per idle TLS connection and CPU per small TLS round trip, asyncio vs uvloop.

A TLS echo server runs in a child process on one loop configuration; the client (this process)
opens ``--connections`` TLS connections, each of which first carries ``--payload`` bytes (0: only
a short message), and reads the server's RSS before and after (``/proc/PID/statm``). Then one
connection does ``--rounds`` round trips of 300 bytes and the server's CPU time per round trip is
read (``/proc/PID/stat``). Configurations:

* ``asyncio``: asyncio's defaults (256 KiB zero-filled TLS read buffer per connection);
* ``asyncio tuned``: ``bastion.runtime.tune_runtime()`` (64 KiB buffer, mmap threshold, GC);
* ``uvloop``: uvloop's defaults;
* ``uvloop tuned``: uvloop + ``tune_runtime()``, what ``bastion start`` runs.

The numbers are those of the server process alone (no proxy logic): they isolate what the loop's
TLS layer costs. Prints one row per configuration and the ratios uvloop tuned / asyncio tuned.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIGS = ("asyncio", "asyncio tuned", "uvloop", "uvloop tuned")
ROUND_TRIP = 300


def _serve(config: str, cert: str, key: str, port_fd: int) -> None:
    """The child: a TLS echo server (``!`` at the end of a message: answer ``ok``)."""
    if "tuned" in config:
        from bastion.runtime import tune_runtime

        tune_runtime()
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if config.startswith("uvloop"):
        import uvloop

        factory = uvloop.new_event_loop
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def data_received(self, data: bytes) -> None:
            if data.endswith(b"!"):
                self.transport.write(b"ok")
            elif not data.endswith(b"."):
                self.transport.write(data)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=ctx, backlog=4096)
        os.write(port_fd, f"{server.sockets[0].getsockname()[1]}\n".encode())
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def _rss_kib(pid: int) -> int:
    return (
        int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    )


def _cpu_seconds(pid: int) -> float:
    """On-CPU time of all threads (schedstat: nanoseconds, finer than /proc/PID/stat ticks)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks) / 1e9


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _connections(port: int, count: int, payload: int) -> list[asyncio.StreamWriter]:
    ctx = _client_context()
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        writer.write(b"x" * payload + b"!")
        await writer.drain()
        await reader.readexactly(2)
        writers.append(writer)
    return writers


def _round_trips(port: int, rounds: int) -> None:
    raw = socket.create_connection(("127.0.0.1", port))
    with _client_context().wrap_socket(raw, server_hostname="localhost") as sock:
        for _ in range(rounds):
            sock.sendall(b"x" * ROUND_TRIP)
            got = 0
            while got < ROUND_TRIP:
                got += len(sock.recv(ROUND_TRIP - got))


def measure(config: str, args: argparse.Namespace, cert: str, key: str) -> dict[str, float]:
    read_fd, write_fd = os.pipe()
    here = str(Path(__file__).parent)
    code = (
        f"import sys; sys.path[:0] = [{here!r}]; import tls_memory; "
        f"tls_memory._serve({config!r}, {cert!r}, {key!r}, {write_fd})"
    )
    child = subprocess.Popen([sys.executable, "-c", code], pass_fds=(write_fd,))
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as pipe:
            port = int(pipe.readline())

        async def run() -> float:
            warm = await _connections(port, 10, args.payload)
            for writer in warm:
                writer.close()
            await asyncio.sleep(0.3)
            before = _rss_kib(child.pid)
            writers = await _connections(port, args.connections, args.payload)
            await asyncio.sleep(0.5)
            after = _rss_kib(child.pid)
            for writer in writers:
                writer.close()
            return (after - before) / int(args.connections)

        per_connection: float = asyncio.run(run())
        start = _cpu_seconds(child.pid)
        _round_trips(port, args.rounds)
        cpu = (_cpu_seconds(child.pid) - start) / args.rounds
        return {"kib_per_idle_connection": per_connection, "cpu_us_per_round_trip": 1e6 * cpu}
    finally:
        child.kill()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--payload", type=int, default=0, help="bytes each connection carries")
    parser.add_argument("--rounds", type=int, default=20000, help="300-byte round trips")
    parser.add_argument("--quick", action="store_true", help="50 connections, 2000 round trips")
    parser.add_argument("--json", default="", help="also write the numbers here")
    args = parser.parse_args()
    if args.quick:
        args.connections, args.rounds = 50, 2000
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        cert, key = str(Path(tmp) / "cert.pem"), str(Path(tmp) / "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"],
            check=True, capture_output=True,
        )  # fmt: skip
        results = {config: measure(config, args, cert, key) for config in CONFIGS}
    load = os.getloadavg()
    print(
        f"TLS server alone: {args.connections} connections carrying {args.payload} bytes each, "
        f"{args.rounds} round trips of {ROUND_TRIP} bytes"
    )
    for config, row in results.items():
        print(
            f"  {config:14s} {row['kib_per_idle_connection']:7.1f} KiB per idle connection, "
            f"{row['cpu_us_per_round_trip']:6.1f} us CPU per round trip"
        )
    ours, base = results["uvloop tuned"], results["asyncio tuned"]
    memory = ours["kib_per_idle_connection"] / max(base["kib_per_idle_connection"], 0.1)
    cpu = ours["cpu_us_per_round_trip"] / max(base["cpu_us_per_round_trip"], 0.1)
    print(f"  ratio uvloop tuned / asyncio tuned: memory {memory:.2f}x, CPU {cpu:.2f}x")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({**results, "load": load}, indent=2))


if __name__ == "__main__":
    main()
