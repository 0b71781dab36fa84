"""Spawning session processes (pipes and PTY) as the current user; no sockets."""

from __future__ import annotations

import asyncio
import os

from bastion.agent.session import SessionMeta, SessionStream, lookup_login, session_env
from bastion.agent.spawn import ExitStatus, PtySize, SessionProcess
from bastion.agent.ssh_session import find_sftp_server

ME = lookup_login(os.environ.get("USER") or __import__("getpass").getuser())


def _stream(out: list[tuple[bytes, bool]]) -> SessionStream:
    meta = SessionMeta("s", "alice", ME.name, "n", "", "exec")
    return SessionStream(meta, lambda d, e: out.append((d, e)))


async def _start(argv: list[str], out: list[tuple[bytes, bool]], pty: PtySize | None = None,
                 executable: str | None = None) -> SessionProcess:  # fmt: skip
    env = session_env(ME, {"LANG": "C", "LD_PRELOAD": "x"}, term="xterm" if pty else None)
    return await SessionProcess.start(
        argv, user=ME, env=env, stream=_stream(out), pty_size=pty, executable=executable
    )


async def test_pipes_exit_code_stdout_stderr_and_stdin() -> None:
    out: list[tuple[bytes, bool]] = []
    proc = await _start(["/bin/sh", "-c", "read x; echo out-$x; echo err >&2; exit 4"], out)
    proc.write(b"hi\n")
    proc.write_eof()
    status = await asyncio.wait_for(proc.wait(), 10)
    assert status == ExitStatus(4)
    assert (b"out-hi\n", False) in out and (b"err\n", True) in out
    assert proc.stream.meta.bytes_in == 3 and proc.stream.meta.bytes_out == 11


async def test_env_is_exactly_what_was_built() -> None:
    out: list[tuple[bytes, bool]] = []
    proc = await _start(["/usr/bin/env"], out)
    await asyncio.wait_for(proc.wait(), 10)
    text = b"".join(d for d, _ in out).decode()
    assert "LD_PRELOAD" not in text and "LANG=C" in text and f"HOME={ME.home}" in text


async def test_pty_eof_is_ctrl_d() -> None:
    out: list[tuple[bytes, bool]] = []
    proc = await _start(["/bin/cat"], out, pty=PtySize())
    proc.write_eof()
    assert await asyncio.wait_for(proc.wait(), 10) == ExitStatus(0)


async def test_login_shell_argv0() -> None:
    out: list[tuple[bytes, bool]] = []
    proc = await _start(["-sh", "-c", 'echo "$0"'], out, executable="/bin/sh")
    await asyncio.wait_for(proc.wait(), 10)
    assert b"".join(d for d, _ in out).strip() == b"-sh"


def test_sftp_server_found_on_this_host() -> None:
    assert find_sftp_server() is None or os.access(str(find_sftp_server()), os.X_OK)


async def test_pipes_are_widened_for_bulk_input() -> None:
    # Bulk input through a 64 KiB pipe made the node the slowest stage of bsh ssh (issue 12).
    import fcntl

    from bastion.agent.spawn import PIPE_SIZE

    out: list[tuple[bytes, bool]] = []
    proc = await _start(["/bin/cat"], out)
    assert proc._transport is not None
    for fd in (0, 1):
        pipe = proc._transport.get_pipe_transport(fd)
        assert pipe is not None
        size = fcntl.fcntl(pipe.get_extra_info("pipe").fileno(), fcntl.F_GETPIPE_SZ)
        assert size >= PIPE_SIZE
    proc.write(b"x" * (PIPE_SIZE // 2))
    proc.write_eof()
    assert await asyncio.wait_for(proc.wait(), 10) == ExitStatus(0)
    assert sum(len(d) for d, _ in out) == PIPE_SIZE // 2
