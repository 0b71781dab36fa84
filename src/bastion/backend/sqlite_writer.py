"""The SQLite backend's writer in a process of its own (``storage.writer: process``).

Layer: backend (IO shell). The writer's connection normally runs on a worker thread of the
daemon. Every statement step gives the GIL away and takes it back, so under load the writer
thread and the event loop hand the GIL to each other thousands of times a second, and each
hand-over can stall the loop (a proxied ``pgbench -S`` lost ~10% of its rate to it). Here the
same synchronous store (``bastion.backend.sqlite._Store``) runs in a child process
(:mod:`bastion.backend.sqlite_child`) and the event loop talks to it over a socket pair: no
thread, no shared GIL.

Wire: each message is a 4-byte big-endian length and a pickle. A request is ``(method, args)``
naming a method of the store; an answer is ``("ok", result)`` or ``("err", exception)``, in the
order of the requests (the child serves one at a time, as the single worker thread did). The
socket pair is anonymous and both ends belong to this daemon and the child it started, so
nothing else can write to it: pickle is safe here, and carries the backend's own types
(``Item``, ``Event``) without a second encoding.

The child ignores SIGINT and SIGTERM (a Ctrl-C or a service stop reaches the whole process
group; the daemon's own shutdown still has writes to make) and exits when its socket closes:
when the daemon closes the backend, or dies. A child that dies fails the calls in flight with
ConnectionProblem (the change may or may not have been made, as with a lost connection to a
database server) and the next call starts a new one; SQLite's transactions keep the file
consistent either way.
"""

from __future__ import annotations

import asyncio
import collections
import io
import pickle
import socket
import struct
import sys
from typing import Any

import structlog

from bastion.errors import BastionError, ConnectionProblem
from bastion.tasks import TaskSet

__all__ = [
    "CHILD_MODULE",
    "ProcessWriter",
    "answer_for",
    "encode",
    "read_message",
    "write_message",
]

CHILD_MODULE = "bastion.backend.sqlite_child"
_HEADER = struct.Struct("!I")
_STOP_TIMEOUT = 10.0
"""Seconds the child gets to finish its queued work once its socket closed."""
_log = structlog.stdlib.get_logger(__name__)


def encode(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def write_message(stream: io.BufferedIOBase, message: object) -> None:
    """Send one message on a blocking stream (the child's side)."""
    stream.write(encode(message))
    stream.flush()


def read_message(stream: io.BufferedIOBase) -> Any:
    """The next message from a blocking stream, or None at its end (the child's side)."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)  # noqa: S301 - our own process's socket pair (module docstring)


def answer_for(exc: BaseException) -> tuple[str, BaseException]:
    """The ``("err", ...)`` answer for an exception, reduced to a BastionError with the same
    message when it cannot cross the socket as it is."""
    try:
        pickle.dumps(exc)
    except Exception:  # noqa: BLE001 - any pickling failure: send what it said
        return "err", BastionError(f"the sqlite writer failed: {type(exc).__name__}: {exc}")
    return "err", exc


class ProcessWriter:
    """The client of one writer child: :meth:`call` runs a store method there and returns
    its result (or raises its error). Calls are served in the order they were made."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._starting = asyncio.Lock()
        self._tasks = TaskSet()
        self._closed = False

    @classmethod
    async def start(cls, path: str, busy_timeout: float) -> ProcessWriter:
        """Start the child; it opens the file (creating the schema) before this returns.

        Raises:
            ConnectionProblem: the child could not start or could not open the file.
        """
        writer = cls(path, busy_timeout)
        await writer._spawn()
        return writer

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    CHILD_MODULE,
                    str(theirs.fileno()),
                    self._path,
                    repr(self._busy_timeout),
                    pass_fds=(theirs.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL,
                )
            finally:
                theirs.close()
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except OSError as exc:
            ours.close()
            raise ConnectionProblem(f"cannot start the sqlite writer process: {exc}") from exc
        try:
            status, value = await _read(reader)
        except (EOFError, asyncio.IncompleteReadError):
            writer.close()
            await proc.wait()
            raise ConnectionProblem(
                f"the sqlite writer process exited at start (status {proc.returncode})"
            ) from None
        if status != "ok":
            writer.close()
            await proc.wait()
            raise value
        self._proc, self._writer = proc, writer
        self._tasks.spawn(self._answers(reader, writer, proc), f"sqlite-writer:{proc.pid}")

    async def _answers(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        proc: asyncio.subprocess.Process,
    ) -> None:
        """Hand each answer to the oldest call; when the child goes, fail the rest."""
        try:
            while True:
                status, value = await _read(reader)
                future = self._pending.popleft()
                if future.done():  # its caller was cancelled: the call ran all the same
                    continue
                if status == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (EOFError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            # Calls made from here on go to the next child, with their own queue.
            if self._writer is writer:
                self._writer = None
            lost, self._pending = self._pending, collections.deque()
            writer.close()
            status = await proc.wait()
            if not self._closed:  # it died: say so now, not at the next write
                _log.warning("sqlite_writer_exited", status=status, calls_lost=len(lost))
            for future in lost:
                if not future.done():
                    future.set_exception(
                        ConnectionProblem(
                            f"the sqlite writer process exited (status {status}); the change "
                            "may not have been made, try again"
                        )
                    )

    async def call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` on the child's store.

        Raises:
            ConnectionProblem: the backend is closed, or the child died during the call.
            BastionError: what the store raised (sqlite errors already translated).
        """
        if self._closed:
            raise ConnectionProblem("backend is closed")
        if self._writer is None:
            async with self._starting:
                if self._writer is None and not self._closed:
                    _log.warning("sqlite_writer_restarting", path=self._path)
                    await self._spawn()
        writer = self._writer
        if writer is None:
            raise ConnectionProblem("backend is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(future)  # before the write: answers come back in this order
        writer.write(encode((method, args)))
        return await future

    async def close(self) -> None:
        """End our half of the socket and wait: the child serves what it was sent (those
        calls get their answers), then sees the end and exits."""
        if self._closed:
            return
        self._closed = True
        proc, writer = self._proc, self._writer
        if writer is not None:
            writer.write_eof()
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await self._tasks.cancel_all()


async def _read(reader: asyncio.StreamReader) -> Any:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    body = await reader.readexactly(size)
    return pickle.loads(body)  # noqa: S301 - our own process's socket pair (module docstring)
