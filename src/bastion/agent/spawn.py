"""Spawning and driving one session process as an OS user, with or without a PTY.

Layer: agent IO shell (processes, file descriptors). Protocol-agnostic: the SSH channel code
calls :meth:`SessionProcess.start`, then ``write``/``write_eof``/``resize``/``send_signal`` and
awaits :meth:`SessionProcess.wait`. Every byte in either direction goes through the session's
:class:`~bastion.agent.session.SessionStream`, which counts it and shows it to the observers.

How a PTY session is set up (what ``sshd`` does): ``pty.openpty()``; the child gets the slave
as stdin/stdout/stderr, ``start_new_session=True`` makes it a session leader (``setsid``), and a
``preexec_fn`` makes the slave its controlling terminal (``TIOCSCTTY``), so job control, Ctrl-C
and ``SIGWINCH`` work. The parent closes its slave copy at once: the master then reads ``EIO``
when the last holder of the slave exits, which is our end-of-output.

Switching user: only when the node runs as root and the login is another account, through
``subprocess``'s ``user=``/``group=``/``extra_groups=`` (setgroups, setregid, setreuid, in that
order, before ``preexec_fn`` runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import struct
import termios
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.agent.session import LoginUser, SessionStream
from bastion.runtime import as_transport, connect_write_pipe, subprocess_exec

__all__ = ["SIGNALS", "ExitStatus", "PtySize", "SessionProcess"]

SIGNALS: frozenset[str] = frozenset(
    {
        "ABRT",
        "ALRM",
        "FPE",
        "HUP",
        "ILL",
        "INT",
        "KILL",
        "PIPE",
        "QUIT",
        "SEGV",
        "TERM",
        "USR1",
        "USR2",
    }  # fmt: skip
)
"""Signal names a client may send (RFC 4254 section 6.10)."""
OUTPUT_GRACE = 2.0
"""After the process exits, how long to wait for the rest of its output (a background child
may hold the terminal or pipe open forever; OpenSSH would hang, we stop waiting)."""


@dataclass(frozen=True, slots=True)
class PtySize:
    cols: int = 80
    rows: int = 24
    width_px: int = 0
    height_px: int = 0

    def packed(self) -> bytes:
        """``struct winsize`` for ``TIOCSWINSZ``; values clamped to 16 bits."""

        def clamp(value: int) -> int:
            return max(0, min(value, 0xFFFF))

        return struct.pack(
            "HHHH", clamp(self.rows), clamp(self.cols), clamp(self.width_px), clamp(self.height_px)
        )


@dataclass(frozen=True, slots=True)
class ExitStatus:
    code: int | None
    """Exit code; None when a signal ended the process."""
    signal: str = ""
    """Signal name without ``SIG`` (``TERM``) when a signal ended the process."""


FlowControl = Callable[[bool], None]
"""Called with True when the process stops accepting input fast enough, False when it does
again: the channel pauses and resumes reading from the client."""


PIPE_SIZE = 1024 * 1024
"""Capacity asked for the stdin and stdout pipes of a session without a PTY (Linux default:
64 KiB; 1 MiB is ``fs.pipe-max-size``'s default). Bulk input (``ssh node 'cat > f' < big``)
arrives one SSH packet (32 KiB) at a time: in a 64 KiB pipe every other packet met a full pipe,
then cost a failed write, a writer callback, a channel pause and resume and a wake-up of the
process, which made the node the slowest stage of ``bsh ssh`` (issue 12). Best effort."""


def _widen_pipes(transport: asyncio.SubprocessTransport) -> None:
    """Ask for :data:`PIPE_SIZE` on the process's stdin and stdout pipes (ignored where the
    system refuses: another OS, or the user's pipe quota, ``fs.pipe-user-pages-soft``)."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is None:
        return
    for fd in (0, 1):
        pipe = transport.get_pipe_transport(fd)
        handle = pipe.get_extra_info("pipe") if pipe is not None else None
        if handle is not None:
            with contextlib.suppress(OSError, ValueError):
                fcntl.fcntl(handle.fileno(), setpipe, PIPE_SIZE)


def _workdir(user: LoginUser) -> str:
    return user.home if os.path.isdir(user.home) else "/"


def _make_controlling_tty() -> None:  # pragma: no cover - runs in the child
    # start_new_session already called setsid(); fd 0 is the PTY slave.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _ProcProtocol(asyncio.SubprocessProtocol):
    def __init__(self, owner: SessionProcess) -> None:
        self._owner = owner

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._owner._stream.output(data, stderr=fd == 2)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._owner._output_closed(fd)

    def process_exited(self) -> None:
        self._owner._exited.set()

    def pause_writing(self) -> None:
        self._owner._flow(True)

    def resume_writing(self) -> None:
        self._owner._flow(False)


class _PtyReader(asyncio.Protocol):
    def __init__(self, owner: SessionProcess) -> None:
        self._owner = owner

    def data_received(self, data: bytes) -> None:
        self._owner._stream.output(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        # EIO: every holder of the slave has closed it.
        self._owner._output_closed(1)


class _PtyWriter(asyncio.BaseProtocol):
    def __init__(self, owner: SessionProcess) -> None:
        self._owner = owner

    def pause_writing(self) -> None:
        self._owner._flow(True)

    def resume_writing(self) -> None:
        self._owner._flow(False)


class SessionProcess:
    """A running session process. Build with :meth:`start`."""

    def __init__(self, stream: SessionStream, flow: FlowControl | None) -> None:
        self._stream = stream
        self._flow_cb = flow
        self._exited = asyncio.Event()
        self._output_done = asyncio.Event()
        self._open_outputs: set[int] = set()
        self._transport: asyncio.SubprocessTransport | None = None
        self._master: int | None = None
        self._pty_read: asyncio.ReadTransport | None = None
        self._pty_write: asyncio.WriteTransport | None = None

    @property
    def pid(self) -> int:
        assert self._transport is not None
        pid = self._transport.get_pid()
        assert pid is not None
        return pid

    @property
    def stream(self) -> SessionStream:
        return self._stream

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        user: LoginUser,
        env: dict[str, str],
        stream: SessionStream,
        pty_size: PtySize | None = None,
        executable: str | None = None,
        flow: FlowControl | None = None,
    ) -> SessionProcess:
        """Spawn ``argv`` as ``user``.

        Args:
            argv: program and arguments (``argv[0]`` may be ``-bash`` for a login shell when
                ``executable`` names the binary).
            user: the account (from :func:`~bastion.agent.session.lookup_login`).
            env: the complete environment (from :func:`~bastion.agent.session.session_env`).
            stream: where output goes and input is counted.
            pty_size: allocate a PTY of this size; None for pipes (exec, sftp-server).
            executable: the binary to run when ``argv[0]`` is not it.
            flow: input flow control callback.

        Returns:
            The running process.

        Raises:
            OSError: the program could not be started (missing binary, bad home directory).
        """
        self = cls(stream, flow)
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {
            "env": env,
            "cwd": _workdir(user),
            "start_new_session": True,
            "executable": executable,
        }
        if user.needs_switch:
            kwargs.update(user=user.uid, group=user.gid, extra_groups=list(user.groups))
        if pty_size is None:
            self._open_outputs = {1, 2}
            transport, _ = await subprocess_exec(  # Popen's semantics on uvloop too
                lambda: _ProcProtocol(self),
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                **kwargs,
            )
            self._transport = transport
            _widen_pipes(transport)
            return self
        master, slave = pty.openpty()
        try:
            fcntl.ioctl(master, termios.TIOCSWINSZ, pty_size.packed())
            transport, _ = await subprocess_exec(
                lambda: _ProcProtocol(self),
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                preexec_fn=_make_controlling_tty,
                **kwargs,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)  # the child has its copy; ours would hide the final EIO
        self._transport = transport
        self._master = master
        self._open_outputs = {1}
        # Reading and writing need separate fds: each asyncio pipe transport closes its own.
        reader = os.fdopen(master, "rb", buffering=0)
        writer = os.fdopen(os.dup(master), "wb", buffering=0)
        read_transport, _ = await loop.connect_read_pipe(lambda: _PtyReader(self), reader)
        write_transport, _ = await connect_write_pipe(lambda: _PtyWriter(self), writer)
        self._pty_read = read_transport
        self._pty_write = write_transport
        return self

    # -- callbacks from the protocols ----------------------------------------------------------

    def _flow(self, paused: bool) -> None:
        if self._flow_cb is not None:
            self._flow_cb(paused)

    def _output_closed(self, fd: int) -> None:
        self._open_outputs.discard(fd)
        if not self._open_outputs:
            self._output_done.set()

    # -- driving the process -------------------------------------------------------------------

    def _stdin(self) -> asyncio.WriteTransport | None:
        if self._pty_write is not None:
            return self._pty_write
        if self._transport is None:
            return None
        pipe = self._transport.get_pipe_transport(0)
        return as_transport(pipe) if pipe is not None else None  # uvloop: not a subclass

    def write(self, data: bytes) -> None:
        """Client input to the process (counted and observed first)."""
        self._stream.input(data)
        stdin = self._stdin()
        if stdin is not None and not stdin.is_closing():
            stdin.write(data)

    def write_eof(self) -> None:
        """The client closed its input: close stdin (pipes) or send ^D (PTY, like sshd)."""
        if self._pty_write is not None:
            if not self._pty_write.is_closing():
                self._pty_write.write(b"\x04")
            return
        stdin = self._stdin()
        if stdin is not None and not stdin.is_closing():
            stdin.close()

    def resize(self, size: PtySize) -> None:
        """Set the PTY size; the kernel sends SIGWINCH to the foreground process group."""
        self._stream.resize(size.cols, size.rows)
        if self._master is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, size.packed())

    def _process_group(self) -> int:
        if self._master is not None:
            with contextlib.suppress(OSError):
                return os.tcgetpgrp(self._master)  # the foreground job, as a terminal would
        return self.pid  # session leader: its pid is its process group

    def send_signal(self, name: str) -> bool:
        """Deliver a client signal (``INT``, ``TERM``, ...) to the process group.

        Returns:
            False for a name outside :data:`SIGNALS` or a process that is gone.
        """
        if name not in SIGNALS or self._exited.is_set():
            return False
        try:
            os.killpg(self._process_group(), signal.Signals[f"SIG{name}"])
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def pause_output(self) -> None:
        """The client cannot take more output now: stop reading from the process."""
        for reader in self._readers():
            reader.pause_reading()

    def resume_output(self) -> None:
        for reader in self._readers():
            reader.resume_reading()

    def _readers(self) -> list[asyncio.ReadTransport]:
        if self._pty_read is not None:
            return [self._pty_read] if not self._pty_read.is_closing() else []
        if self._transport is None:
            return []
        pipes = (self._transport.get_pipe_transport(fd) for fd in (1, 2))
        return [as_transport(p) for p in pipes if p is not None and not p.is_closing()]

    async def wait(self, output_grace: float = OUTPUT_GRACE) -> ExitStatus:
        """Wait for the process to exit and its output to drain (at most ``output_grace`` s)."""
        await self._exited.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(output_grace):
                await self._output_done.wait()
        assert self._transport is not None
        code = self._transport.get_returncode()
        self.close()
        if code is not None and code < 0:
            try:
                return ExitStatus(None, signal.Signals(-code).name.removeprefix("SIG"))
            except ValueError:
                return ExitStatus(None, str(-code))
        return ExitStatus(code)

    async def kill(self, grace: float = 0.5) -> None:
        """End the whole process group: SIGHUP (+SIGCONT), then SIGKILL after ``grace``."""
        if self._transport is None or self._exited.is_set():
            return
        for sig in (signal.SIGHUP, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
        try:
            async with asyncio.timeout(grace):
                await self._exited.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Release transports and the PTY master (the process itself is not signalled)."""
        for transport in (self._pty_read, self._pty_write):
            if transport is not None:
                transport.close()
        self._pty_read = self._pty_write = None
        self._master = None  # closed by the read transport's file object
        if self._transport is not None and self._exited.is_set():
            self._transport.close()
