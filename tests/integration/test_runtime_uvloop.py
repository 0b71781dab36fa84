"""What ``bastion.runtime`` papers over between asyncio's loop and uvloop, run on uvloop (the
daemon's default loop; pytest's own loop is asyncio's): processes started with ``Popen``'s
semantics, a PTY written through a transport, TLS on an accepted socket with our own protocol.
The rest of the daemon runs on uvloop in every test that starts ``bastion start``."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from bastion.agent.session import SessionMeta, SessionStream, lookup_login, session_env
from bastion.agent.spawn import PtySize, SessionProcess
from bastion.runtime import as_transport, subprocess_exec

pytestmark = pytest.mark.integration

T = TypeVar("T")
ME = lookup_login(os.environ.get("USER") or __import__("getpass").getuser())


def _on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _wait_for(out: list[tuple[bytes, bool]], text: bytes) -> None:
    async with asyncio.timeout(5):
        while text not in b"".join(d for d, _ in out):
            await asyncio.sleep(0.01)


def test_pty_session_is_the_controlling_terminal_and_takes_input_on_uvloop() -> None:
    async def main() -> None:
        out: list[tuple[bytes, bool]] = []
        meta = SessionMeta("s", "alice", ME.name, "n", "", "shell")
        env = session_env(ME, {"LANG": "C"}, term="xterm")
        proc = await SessionProcess.start(
            ["-sh"],  # a login shell's argv[0], with the binary named apart
            user=ME,
            env=env,
            stream=SessionStream(meta, lambda d, e: out.append((d, e))),
            pty_size=PtySize(100, 30),
            executable="/bin/sh",
        )
        proc.write(b"stty size; test -t 0 && echo is-a-tty; echo arg0=$0\n")
        await _wait_for(out, b"30 100")
        await _wait_for(out, b"is-a-tty")
        await _wait_for(out, b"arg0=-sh")
        proc.resize(PtySize(132, 40))
        proc.write(b"stty size\n")
        await _wait_for(out, b"40 132")
        proc.write_eof()  # ^D: the shell exits
        status = await proc.wait()
        assert status.code == 0

    _on_uvloop(main())


def test_subprocess_exec_keeps_popen_semantics_on_uvloop() -> None:
    class Collect(asyncio.SubprocessProtocol):
        def __init__(self) -> None:
            self.out = b""
            self.done = asyncio.get_running_loop().create_future()

        def pipe_data_received(self, fd: int, data: bytes) -> None:
            self.out += data

        def process_exited(self) -> None:
            self.done.set_result(None)

    async def main() -> None:
        transport, protocol = await subprocess_exec(
            Collect,
            "custom-name",
            "-c",
            "echo $0 $(id -u); read line; echo got-$line; exit 3",
            executable="/bin/sh",
            user=os.getuid(),  # uvloop's own subprocess_exec refuses user=
            start_new_session=True,
        )
        assert isinstance(protocol, Collect)
        stdin = as_transport(transport.get_pipe_transport(0))
        stdin.write(b"hello\n")
        async with asyncio.timeout(5):
            await protocol.done
        assert transport.get_returncode() == 3
        transport.close()
        assert protocol.out.split() == [b"custom-name", str(os.getuid()).encode(), b"got-hello"]

    _on_uvloop(main())


def test_accepted_socket_hands_tls_to_our_protocol_on_uvloop(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=x"],
        check=True, capture_output=True,
    )  # fmt: skip
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE

    class Hold(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = as_transport(transport)  # no isinstance: uvloop's is no subclass
            self.transport.pause_reading()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listening = socket.create_server(("127.0.0.1", 0))
        listening.setblocking(False)
        port = listening.getsockname()[1]
        client = asyncio.ensure_future(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="x")
        )
        sock, _ = await loop.sock_accept(listening)
        holder = Hold()
        # With TLS, uvloop returns its TLS layer as the protocol: hold your own object.
        transport, _ = await loop.connect_accepted_socket(lambda: holder, sock, ssl=server_ctx)
        assert holder.transport is transport
        assert transport.get_extra_info("ssl_object") is not None
        _, writer = await client
        writer.close()
        transport.close()
        listening.close()

    _on_uvloop(main())
