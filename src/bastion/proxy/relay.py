"""A protocol-level bidirectional relay between two asyncio Transports.

Layer: ``proxy`` (IO shell). Used between a client's TLS transport and the target: a tunnel
:class:`~bastion.tunnel.session.MuxStream` or a TCP connection to an agentless ``sshd``. It does
not look at the bytes (SSH is end to end between the user and the node).

Why protocols and not StreamReader/Writer: ``data_received`` hands us the chunk the transport read
(up to 256 KiB from the TLS layer) and we give that same object to the other ``write`` -- no
intermediate buffer and no copy, which matters at 1 GiB.

Back-pressure: when a destination transport's buffer passes its high-water mark it calls
``pause_writing`` on our protocol for that side, and we ``pause_reading`` the *source*; on
``resume_writing`` we resume it. Half-close: an EOF from one side becomes ``write_eof`` on the
other (or a close when the other cannot half-close); the relay ends when both directions saw EOF
or either side is lost. ``terminate(reason)`` (for the LiveRegistry: locks) aborts both sides at
once.
"""

from __future__ import annotations

import asyncio
import logging

from bastion.runtime import as_transport

__all__ = ["Relay", "RelaySide"]

log = logging.getLogger(__name__)


class RelaySide(asyncio.Protocol):
    """The protocol attached to one of the two transports."""

    @property
    def held(self) -> bool:
        """Reading this side is paused for a reason of its own (a subclass's back-pressure):
        its drained peer does not resume it."""
        return False

    def __init__(self, relay: Relay, name: str) -> None:
        self.relay = relay
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.peer: RelaySide | None = None
        self.bytes_read = 0
        self.eof = False
        self.lost = False
        self.writing_paused = False
        """Our transport is full (its peer is not read until it drains)."""
        self._pending: list[bytes] = []  # read before the peer was attached

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = as_transport(transport)
        self.transport = transport
        if self.peer is not None and self.peer.transport is None:
            transport.pause_reading()  # nowhere to send to yet

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        self.relay.touch()
        peer = self.peer
        if peer is None or peer.transport is None:
            self._pending.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        if not peer.lost:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        self.relay.touch()
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
            else:
                peer.transport.close()
        self.relay.check_done()
        # keep our writing half open: the other direction may still flow. TLS has no half-close:
        # asyncio closes a TLS transport after EOF whatever we answer (and logs a warning on
        # every connection when asked to keep it open), so ask only for plain TCP.
        return self.transport is None or self.transport.get_extra_info("ssl_object") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.relay.side_lost(self, exc)

    def pause_writing(self) -> None:
        # Our transport is full: stop reading from the side that feeds it.
        self.writing_paused = True
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost and not peer.held:
            peer.transport.resume_reading()

    def flush_pending(self) -> None:
        """Forward what was read before the peer was attached, then read again."""
        peer = self.peer
        if peer is None or peer.transport is None or self.transport is None:
            return
        pending, self._pending = self._pending, []
        for chunk in pending:
            peer.transport.write(chunk)
        if not self.lost:
            self.transport.resume_reading()


class Relay:
    """Pumps bytes between side ``a`` and side ``b`` until both are done or it is terminated.

    Usage: attach ``relay.a`` and ``relay.b`` as the protocols of the two transports (e.g.
    ``relay.attach_a(tls_transport)`` and ``tunnel.dial(..., lambda: relay.b)``), call
    :meth:`start` once both are attached, then ``await relay.wait_closed()``.

    Args:
        idle_timeout: seconds without a byte either way after which both sides are closed;
            ``None`` for no limit.
        name: for logs.
    """

    def __init__(self, *, idle_timeout: float | None = None, name: str = "relay") -> None:
        self.loop = asyncio.get_running_loop()
        self.name = name
        self.a = RelaySide(self, "a")
        self.b = RelaySide(self, "b")
        self.a.peer, self.b.peer = self.b, self.a
        self.reason = ""
        """Why the relay ended ("" for a normal close)."""
        self._idle_timeout = idle_timeout
        self._last = self.loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] = self.loop.create_future()
        if idle_timeout is not None:
            self._timer = self.loop.call_later(idle_timeout, self._check_idle)

    @property
    def bytes_a_to_b(self) -> int:
        return self.a.bytes_read

    @property
    def bytes_b_to_a(self) -> int:
        return self.b.bytes_read

    def attach_a(self, transport: asyncio.Transport, early: bytes = b"") -> None:
        """Make ``transport`` side ``a``; ``early`` bytes already read from it go to ``b``."""
        _attach(transport, self.a, early)

    def attach_b(self, transport: asyncio.Transport, early: bytes = b"") -> None:
        _attach(transport, self.b, early)

    def start(self) -> None:
        """Both sides are attached: forward what each read meanwhile and let bytes flow."""
        self.a.flush_pending()
        self.b.flush_pending()
        for side in (self.a, self.b):
            if side.lost:
                self.side_lost(side, None)

    def touch(self) -> None:
        self._last = self.loop.time()

    def check_done(self) -> None:
        if self.a.eof and self.b.eof:
            self._finish("")

    def side_lost(self, side: RelaySide, exc: Exception | None) -> None:
        if exc is not None and not self.reason:
            self.reason = f"{side.name} side lost: {exc}"
        peer = side.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            # Flush what the other side still has to write (close, not abort), then it ends too.
            peer.transport.close()
        if self.a.lost and self.b.lost or peer is None or peer.transport is None:
            self._finish(self.reason)

    def terminate(self, reason: str) -> None:
        """End both sides now, discarding buffered bytes (a lock or an admin action)."""
        if self._done.done():
            return
        self.reason = reason
        for side in (self.a, self.b):
            if side.transport is not None and not side.lost:
                side.transport.abort()
        self._finish(reason)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._done)

    @property
    def done(self) -> bool:
        return self._done.done()

    def _finish(self, reason: str) -> None:
        for side in (self.a, self.b):
            if side.transport is not None and not side.lost and not side.transport.is_closing():
                side.transport.close()
        if self._timer is not None:
            self._timer.cancel()
        if not self._done.done():
            if reason:
                self.reason = reason
            self._done.set_result(None)

    def _check_idle(self) -> None:
        assert self._idle_timeout is not None
        idle = self.loop.time() - self._last
        if idle >= self._idle_timeout:
            log.info("%s: idle for %.0f s, closing", self.name, idle)
            self.terminate(f"idle for {idle:.0f} s")
            return
        self._timer = self.loop.call_later(self._idle_timeout - idle, self._check_idle)


def _attach(transport: asyncio.Transport, side: RelaySide, early: bytes) -> None:
    transport.set_protocol(side)
    side.connection_made(transport)
    transport.pause_reading()
    if early:
        side.bytes_read += len(early)
        side._pending.append(early)
