"""Session processes that need real time: signals to a running child, a PTY resize read back from
the child, killing a process group (the rest of spawning: tests/unit/agent/test_spawn.py)."""

from __future__ import annotations

import asyncio
import os

from bastion.agent.session import SessionMeta, SessionStream, lookup_login, session_env
from bastion.agent.spawn import ExitStatus, PtySize, SessionProcess

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


async def test_pty_is_controlling_terminal_and_resizes() -> None:
    out: list[tuple[bytes, bool]] = []
    proc = await _start(["/bin/sh"], out, pty=PtySize(100, 30))
    proc.write(b"stty size; tty; test -t 0 && echo is-a-tty\n")

    async def wait_for(text: bytes) -> None:
        async with asyncio.timeout(5):
            while text not in b"".join(d for d, _ in out):
                await asyncio.sleep(0.01)

    await wait_for(b"30 100")
    await wait_for(b"is-a-tty")
    proc.resize(PtySize(132, 40))
    assert (proc.stream.meta.cols, proc.stream.meta.rows) == (132, 40)
    proc.write(b"stty size\n")
    await wait_for(b"40 132")
    proc.write(b"exit 2\n")
    assert await asyncio.wait_for(proc.wait(), 10) == ExitStatus(2)
    assert all(not err for _, err in out)  # a PTY merges stderr into the terminal


async def test_kill_ends_process_group() -> None:
    out: list[tuple[bytes, bool]] = []
    proc = await _start(["/bin/sh", "-c", "trap '' HUP; sleep 30 & sleep 30"], out)
    await asyncio.sleep(0.1)
    await asyncio.wait_for(proc.kill(grace=0.2), 5)
    status = await asyncio.wait_for(proc.wait(output_grace=0.5), 5)
    assert status.code is None


async def test_signal_reported_and_unknown_signal_refused() -> None:
    out: list[tuple[bytes, bool]] = []
    proc = await _start(["/bin/sh", "-c", "echo ready; sleep 20"], out)
    async with asyncio.timeout(5):
        while not out:
            await asyncio.sleep(0.01)
    assert not proc.send_signal("WINCH-NOT-A-SIGNAL")
    assert proc.send_signal("TERM")
    assert await asyncio.wait_for(proc.wait(), 10) == ExitStatus(None, "TERM")
    assert not proc.send_signal("TERM")
