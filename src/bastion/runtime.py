"""Process-level tuning of the daemon, applied once at start-up: the event loop, the TLS read
buffer and the garbage collector.

The event loop: uvloop (libuv, with a TLS protocol layer written in Cython) when it is importable
and ``BASTION_EVENT_LOOP`` is not ``asyncio``; asyncio's own loop otherwise. asyncio's TLS layer
(``asyncio.sslproto``, pure Python in 3.11) was about a quarter of the database proxy's CPU and
the largest part of the app proxy's. :func:`run` is the one place a daemon or bench creates its
loop (``bastion start``, ``bench/db.py``, ``bench/app.py``), so they all run on the same one.

asyncio gives every TLS connection a read buffer of ``SSLProtocol.max_size`` bytes (256 KiB),
allocated with ``bytearray(n)``, which zero-fills it: every idle TLS connection through the proxy
costs 256 KiB of resident memory, most of the proxy's per-session cost. TLS records carry at most
16 KiB, so a 64 KiB buffer still reads several records per call; measured on loopback, an idle
TLS connection drops from about 280 KiB to about 85 KiB. uvloop's buffer (also 256 KiB, a
compile-time constant) comes from ``malloc`` and is never zero-filled: only the pages a read
writes become resident, about 45 KiB per idle TLS connection in all (``bench/tls_memory.py``).

malloc: both loops read with ``recv(256 KiB)`` / ``SSLObject.read(256 KiB)`` into a fresh bytes
object that is then shrunk to what arrived. glibc serves requests over its mmap threshold
(128 KiB at start) with ``mmap``, so each such read costs an ``mmap``, an ``mremap``, a
``munmap`` and a page fault; glibc raises the threshold only when it frees a large mmapped block,
which this shrink-then-free pattern never does (under uvloop, the first closed TLS connection
does). A fixed threshold of 512 KiB (``mallopt(M_MMAP_THRESHOLD)``) serves these reads from the
heap from the first one on: one long-lived uvloop TLS connection, 32-41 -> 25-30 us of server
CPU per small round trip; per-connection memory is unchanged.

A fixed mmap threshold also fixes glibc's trim threshold at its 128 KiB default: each 256 KiB
read then grows the top of the heap (``brk``) and its shrink-then-free gives the top back
(``brk`` again), so every read cost two system calls and page faults for the pages it wrote.
:data:`TRIM_THRESHOLD` (``mallopt(M_TRIM_THRESHOLD)``) keeps up to 8 MiB free at the top: a
TLS relay in Python (``bench/tls_floor.py``) went from 61-76 to 36-43 us of CPU per
``pgbench -S`` transaction.

The garbage collector: a request through the proxy allocates hundreds of short-lived container
objects (parsed headers, audit event dicts), so the default young-generation threshold (700)
runs a collection every few requests, each traversing the young objects of every live
connection. A threshold of 20,000 cut the proxy's CPU per app request by about 10%
(``bench/app.py``, same run); reference counting still frees everything that is not in a cycle
at once, so memory is not held longer except for cyclic garbage.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import ctypes
import ctypes.util
import gc
import os
import stat
import threading
from asyncio import unix_events
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

__all__ = [
    "EVENT_LOOP_ENV",
    "GC_THRESHOLDS",
    "MMAP_THRESHOLD",
    "TLS_READ_BUFFER",
    "TRIM_THRESHOLD",
    "as_transport",
    "event_loop_name",
    "loop_factory",
    "connect_write_pipe",
    "run",
    "subprocess_exec",
    "tune_runtime",
]

T = TypeVar("T")

EVENT_LOOP_ENV = "BASTION_EVENT_LOOP"
"""``asyncio`` forces asyncio's own loop; anything else (or unset): uvloop when installed."""
TLS_READ_BUFFER = 64 * 1024
GC_THRESHOLDS = (20_000, 20, 20)
MMAP_THRESHOLD = 512 * 1024
"""Above the loops' 256 KiB read allocations, so that they come from the heap."""
TRIM_THRESHOLD = 8 * 1024 * 1024
"""Free bytes at the top of the heap before glibc gives them back: far above one read's
256 KiB, so that reads do not move the top of the heap back and forth."""
_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3


def event_loop_name(environ: dict[str, str] | None = None) -> str:
    """``uvloop`` or ``asyncio``: the loop :func:`run` uses under this environment."""
    env = os.environ if environ is None else environ
    if env.get(EVENT_LOOP_ENV, "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def loop_factory(environ: dict[str, str] | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """The constructor of the chosen event loop (see :func:`event_loop_name`)."""
    if event_loop_name(environ) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen event loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def as_transport(transport: asyncio.BaseTransport | None) -> asyncio.Transport:
    """A connection's transport typed as ``asyncio.Transport``, on either loop.

    uvloop's transports (TCP, TLS, pipes) implement asyncio's transport interface without
    subclassing its classes, so ``isinstance(t, asyncio.Transport)`` is False under uvloop:
    protocols narrow with this instead of asserting ``isinstance``.

    Raises:
        TypeError: ``transport`` is None or has no ``write`` / ``pause_reading`` (not a stream
            or pipe transport).
    """
    if transport is None or not (
        hasattr(transport, "write") or hasattr(transport, "pause_reading")
    ):
        raise TypeError(f"not a stream transport: {transport!r}")
    return cast(asyncio.Transport, transport)


async def subprocess_exec(
    protocol_factory: Callable[[], asyncio.SubprocessProtocol], *args: str, **kwargs: Any
) -> tuple[asyncio.SubprocessTransport, asyncio.SubprocessProtocol]:
    """``loop.subprocess_exec`` with ``subprocess.Popen``'s semantics on either loop.

    uvloop spawns through libuv instead of ``Popen``: it refuses ``user=`` / ``group=`` /
    ``extra_groups=``, replaces ``argv[0]`` with ``executable=`` (a login shell's ``-bash``
    is lost) and runs ``preexec_fn`` before ``setsid`` and the stdio ``dup2`` (so a PTY cannot
    become the controlling terminal). On a loop that is not asyncio's, the process is started
    with asyncio's own Popen-based transport instead, its pipes on the running loop, and its
    exit watched through a pidfd (a thread where pidfds are missing).
    """
    loop = asyncio.get_running_loop()
    if isinstance(loop, asyncio.BaseEventLoop):
        return await loop.subprocess_exec(protocol_factory, *args, **kwargs)
    stdin = kwargs.pop("stdin", asyncio.subprocess.PIPE)
    stdout = kwargs.pop("stdout", asyncio.subprocess.PIPE)
    stderr = kwargs.pop("stderr", asyncio.subprocess.PIPE)
    protocol = protocol_factory()
    waiter = loop.create_future()
    # asyncio's private Unix transport (Python 3.11-3.13): Popen, then the pipes connected with
    # connect_read_pipe / connect_write_pipe, which uvloop implements.
    transport = unix_events._UnixSubprocessTransport(  # type: ignore[attr-defined]
        loop, protocol, list(args), False, stdin, stdout, stderr, 0, waiter=waiter, **kwargs
    )
    _watch_exit(loop, transport)
    try:
        await waiter
    except BaseException:
        transport.close()
        await transport._wait()
        raise
    return transport, protocol


def _watch_exit(loop: asyncio.AbstractEventLoop, transport: Any) -> None:
    """Reap the child and tell the transport, on the loop's thread."""
    pid = transport.get_pid()

    def reap() -> int:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped elsewhere: asyncio's convention
            return 255
        return os.waitstatus_to_exitcode(status)

    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd: a waiting thread (asyncio's ThreadedChildWatcher)

        def wait() -> None:
            code = reap()
            with contextlib.suppress(RuntimeError):  # the loop closed first
                loop.call_soon_threadsafe(transport._process_exited, code)

        threading.Thread(target=wait, name=f"waitpid-{pid}", daemon=True).start()
        return

    def exited() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        transport._process_exited(reap())

    loop.add_reader(pidfd, exited)


async def connect_write_pipe(
    protocol_factory: Callable[[], asyncio.BaseProtocol], pipe: Any
) -> tuple[asyncio.WriteTransport, asyncio.BaseProtocol]:
    """``loop.connect_write_pipe`` that also holds for a terminal (a PTY master) on uvloop.

    uvloop's write-pipe transport reads its fd to notice the reader closing: on a PTY master,
    which is read and written, it takes the process's output (and fails on it). For a
    character device on a loop that is not asyncio's, asyncio's own write-pipe transport is
    used, through a shim that maps its private ``_add_writer`` & co. to the public methods.
    """
    loop = asyncio.get_running_loop()
    if isinstance(loop, asyncio.BaseEventLoop) or not stat.S_ISCHR(os.fstat(pipe.fileno()).st_mode):
        return await loop.connect_write_pipe(protocol_factory, pipe)
    protocol = protocol_factory()
    waiter = loop.create_future()
    transport = unix_events._UnixWritePipeTransport(  # type: ignore[attr-defined]
        _PublicFdCallbacks(loop), pipe, protocol, waiter
    )
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    return transport, protocol


class _PublicFdCallbacks:
    """The running loop, with the private fd-callback names asyncio's transports call."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._add_reader = loop.add_reader
        self._add_writer = loop.add_writer
        self._remove_reader = loop.remove_reader
        self._remove_writer = loop.remove_writer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


def _tune_malloc() -> None:
    """Large reads from the heap, and the heap's top kept (the module docstring says why)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def tune_runtime() -> None:
    """Shrink asyncio's per-connection TLS read buffer, serve 256 KiB reads from the heap (and
    keep its top), and collect garbage less often (idempotent)."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
    _tune_malloc()
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now (modules, config, models, caches built
    at start-up) into the permanent generation: full collections later scan only what was
    allocated since (a full collection of a started daemon took ~75 ms, a stall of every
    connection). Called once the daemon is ready."""
    gc.collect()
    gc.freeze()
