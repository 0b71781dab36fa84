"""MuxSession: drives a :class:`~bastion.protocols.muxframe.MuxConnection` over one asyncio
Transport and exposes every mux stream as a real :class:`asyncio.Transport` (:class:`MuxStream`).

Layer: ``tunnel`` (IO shell). The framing, stream ids and credit accounting live in the pure
``protocols/muxframe.py``; this module owns the transport, the timers and the delivery of bytes to
asyncio protocols. It knows nothing about certificates, routes or RBAC.

Why a Transport per stream: asyncssh (the SSH node on the agent), aiohttp and our own relay are all
asyncio protocols. Handing each of them a ``MuxStream`` means one Transport per SSH connection with
no ``socketpair`` bridge and no extra copy (STYLE.md design constraint 2).

Flow control, end to end (a slow consumer never makes anyone buffer without bound):

* receiving: bytes are passed to ``protocol.data_received`` and credit is returned to the peer
  (``data_consumed``) only once delivered. While a stream's reading is paused, bytes queue in the
  stream and no credit is returned, so the peer can have at most one window in flight.
* sending: ``write`` frames as much as the peer's window allows; the rest stays in the stream's send
  buffer and the protocol gets ``pause_writing`` above the high-water mark (the window is
  exhausted). A ``WINDOW_UPDATE`` flushes it and ``resume_writing`` follows below the low mark.
  When the tunnel's own transport pauses us, streams stop flushing (and so also pause their
  writers) until it resumes.

Liveness: a PING every ``keepalive_interval`` seconds; any byte from the peer counts as a sign of
life, and silence for ``keepalive_timeout`` seconds aborts the tunnel (every stream then sees
``connection_lost``). ``drain`` sends GOAWAY and closes the tunnel once its streams are done.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

from bastion.errors import LocalProtocolError, RemoteProtocolError
from bastion.protocols import muxframe
from bastion.protocols.muxframe import MuxConnection
from bastion.runtime import as_transport
from bastion.tasks import TaskSet

__all__ = ["TUNNEL_WINDOW", "MuxSession", "MuxStream", "StreamHandler"]

log = logging.getLogger(__name__)

StreamHandler = Callable[["MuxStream", dict[str, Any]], Awaitable[None] | None]
"""Called for each stream the peer opens; must ``attach`` a protocol (may be a coroutine)."""

TUNNEL_WINDOW = 2 * 1024 * 1024
"""Per-stream credit on our tunnels (both ends use it: it is part of the tunnel protocol).
Throughput of one stream is bounded by window / round trip: muxframe's 256 KiB default gave
~45 MB/s through the in-process echo benchmark, 2 MiB about twice that (OpenSSH's channel window
is 2 MiB too). It also bounds what a slow consumer can make the other side buffer per stream."""

DEFAULT_HIGH_WATER = 256 * 1024
DEFAULT_LOW_WATER = 64 * 1024


def _parse_addr(text: object) -> tuple[str, int] | None:
    """``"ip:port"`` / ``"[v6]:port"`` -> ``(ip, port)``; None when absent or malformed."""
    if not isinstance(text, str) or ":" not in text:
        return None
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class MuxStream(asyncio.Transport):
    """One multiplexed stream, as an asyncio Transport.

    Created by :meth:`MuxSession.open_stream` (our side opens) or handed to the session's stream
    handler (the peer opened). Attach the protocol with :meth:`attach`, which is
    ``set_protocol`` + ``connection_made`` and then delivers anything that arrived meanwhile.
    """

    def __init__(self, session: MuxSession, stream_id: int, header: dict[str, Any]) -> None:
        super().__init__(
            extra={
                "peername": _parse_addr(header.get("client_addr")),
                "sockname": session.get_extra_info("sockname"),
                "tunnel_peername": session.get_extra_info("peername"),
                "header": header,
                "stream_id": stream_id,
            }
        )
        self.stream_id = stream_id
        self.header = header
        self._session = session
        self._protocol: asyncio.BaseProtocol | None = None
        self._send = bytearray()
        self._recv: deque[bytes] = deque()
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_LOW_WATER
        self._reading_paused = False
        self._writing_paused = False
        self._eof_wanted = False  # write_eof() called; EOF goes out after the send buffer
        self._eof_sent = False
        self._close_wanted = False  # close() called; CLOSE goes out after the send buffer
        self._remote_eof = False
        self._eof_delivered = False
        self._remote_closed = False
        self._lost = False
        self._delivering = False

    # ------------------------------------------------------------------ protocol plumbing

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        """Set the protocol, call its ``connection_made`` and deliver queued data."""
        self._protocol = protocol
        protocol.connection_made(self)
        if self._lost:  # the peer or the tunnel went away before we were attached
            self._session.loop.call_soon(protocol.connection_lost, None)
            return
        self._deliver()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None, "no protocol attached"
        return self._protocol

    def is_closing(self) -> bool:
        return self._lost or self._close_wanted or self._remote_closed

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._lost

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._session.loop.call_soon(self._deliver)

    # ------------------------------------------------------------------ receiving

    def _on_data(self, data: bytes) -> None:
        if self._recv or self._reading_paused or self._protocol is None or self._delivering:
            self._recv.append(data)  # bounded by the window: no credit until delivered
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self._feed_protocol(data)
        except Exception:
            # One broken stream protocol must not take the whole tunnel down with it.
            log.exception("mux stream %d: protocol failed on data", self.stream_id)
            self.terminate("protocol error")
            return
        self._session.consumed(self.stream_id, len(data))

    def _feed_protocol(self, data: bytes) -> None:
        protocol = self._protocol
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(data)
            while view:
                buf = memoryview(protocol.get_buffer(len(view))).cast("B")
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                protocol.buffer_updated(n)
                view = view[n:]
        elif isinstance(protocol, asyncio.Protocol):
            protocol.data_received(data)

    def _deliver(self) -> None:
        """Deliver queued data, then EOF, then the peer's close, as far as pausing allows."""
        if self._protocol is None or self._lost or self._delivering:
            return
        self._delivering = True
        try:
            while self._recv and not self._reading_paused and not self._lost:
                self._feed(self._recv.popleft())
        finally:
            self._delivering = False
        if self._recv or self._lost:
            return
        if self._remote_eof and not self._eof_delivered:
            self._eof_delivered = True
            keep_open = (
                self._protocol.eof_received()
                if isinstance(self._protocol, asyncio.Protocol | asyncio.BufferedProtocol)
                else None
            )
            if not keep_open and not self._remote_closed:
                self.close()
        if self._remote_closed:
            self._lose(None)

    def _on_eof(self) -> None:
        self._remote_eof = True
        self._deliver()

    def _on_remote_close(self, reason: str) -> None:
        # Data sent before the CLOSE is still delivered (like TCP's FIN after data); nothing
        # more can be sent, so the send buffer is dropped.
        self._remote_closed = True
        self._send.clear()
        if reason:
            log.debug("mux stream %d closed by peer: %s", self.stream_id, reason)
        if self._protocol is None:
            self._lose(None)
        else:
            self._deliver()

    # ------------------------------------------------------------------ sending

    def get_write_buffer_size(self) -> int:
        return len(self._send)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._check_pause()

    def can_write_eof(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        if self._eof_wanted:
            raise RuntimeError("cannot write to a mux stream after write_eof()")
        if self._lost or self._close_wanted or self._remote_closed or not data:
            return  # like asyncio's socket transports: writes after close/loss are dropped
        if not self._send and not self._session.paused:
            sent = self._session.send_data(self.stream_id, data)
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        self._send += data
        self._check_pause()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview[Any]]) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._eof_wanted or self._close_wanted or self._lost or self._remote_closed:
            return
        self._eof_wanted = True
        self._flush()

    def close(self) -> None:
        if self._close_wanted or self._lost:
            return
        self._close_wanted = True
        if self._remote_closed:
            self._lose(None)
            return
        self._flush()

    def abort(self) -> None:
        self.terminate("aborted")

    def terminate(self, reason: str) -> None:
        """Close now with ``reason`` for the peer's log, discarding unsent data."""
        if self._lost:
            return
        self._send.clear()
        self._close_wanted = True
        self._session.send_close(self.stream_id, reason)
        self._lose(None)

    def _flush(self) -> None:
        """Send what the window allows; then a pending EOF or CLOSE once the buffer is empty."""
        if self._lost or self._session.paused:
            return
        if self._send:
            with memoryview(self._send) as view:
                sent = self._session.send_data(self.stream_id, view)
            del self._send[:sent]
        if self._send:
            self._check_pause()
            return
        if self._eof_wanted and not self._eof_sent and not self._remote_closed:
            self._eof_sent = True
            self._session.send_eof(self.stream_id)
        if self._close_wanted:
            self._session.send_close(self.stream_id, "")
            self._lose(None)
            return
        self._check_pause()

    def _check_pause(self) -> None:
        protocol = self._protocol
        size = len(self._send)
        if not self._writing_paused and size > self._high:
            self._writing_paused = True
            if protocol is not None:
                protocol.pause_writing()
        elif self._writing_paused and size <= self._low:
            self._writing_paused = False
            if protocol is not None and not self._lost:
                protocol.resume_writing()

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._send.clear()
        self._recv.clear()
        self._session.forget(self.stream_id)
        if self._protocol is not None:
            self._session.loop.call_soon(self._protocol.connection_lost, exc)

    def __repr__(self) -> str:
        return f"<MuxStream {self.stream_id} lost={self._lost} buffered={len(self._send)}>"


class MuxSession(asyncio.Protocol):
    """The protocol of the tunnel's TLS transport; opens and accepts :class:`MuxStream` s.

    Args:
        role: ``"client"`` on the agent (it dialled), ``"server"`` on the proxy.
        on_stream: handler for streams the peer opens; ``None`` refuses them.
        keepalive_interval: seconds between PINGs.
        keepalive_timeout: silence after which the tunnel is declared dead and aborted.
        initial_window: per-stream credit (must match the peer's; default :data:`TUNNEL_WINDOW`).
    """

    def __init__(
        self,
        role: Literal["client", "server"],
        *,
        on_stream: StreamHandler | None = None,
        keepalive_interval: float = 5.0,
        keepalive_timeout: float = 15.0,
        initial_window: int = TUNNEL_WINDOW,
        name: str = "",
    ) -> None:
        self.mux = MuxConnection(role, initial_window=initial_window)
        self.name = name or role
        self.loop = asyncio.get_running_loop()
        self._on_stream = on_stream
        self._interval = keepalive_interval
        self._timeout = keepalive_timeout
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, MuxStream] = {}
        self._tasks = TaskSet()
        self._paused = False
        self._closed: asyncio.Future[None] = self.loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._last_heard = self.loop.time()
        self._pings = 0
        self._draining = False
        self._out: list[bytes] = []
        """Frames written in this event-loop pass, not yet handed to the transport."""
        self.close_reason = ""
        self.closed_callback: Callable[[], None] | None = None
        """Called once, when the tunnel transport is gone (after the streams were told)."""

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = as_transport(transport)
        self._transport = transport
        self._last_heard = self.loop.time()
        self._timer = self.loop.call_later(self._tick_period(), self._keepalive)

    def data_received(self, data: bytes) -> None:
        self._last_heard = self.loop.time()
        mux = self.mux
        try:
            mux.receive_data(data)
            while (event := mux.next_event()) is not None:
                self._dispatch(event)
        except RemoteProtocolError as exc:
            log.warning("tunnel %s: peer broke the mux protocol: %s", self.name, exc)
            self.abort(f"protocol error: {exc}")

    def eof_received(self) -> bool:
        return False  # the tunnel is over: the transport closes and connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None
        error = ConnectionResetError(f"tunnel {self.name} closed: {self.close_reason or exc}")
        for stream in list(self._streams.values()):
            stream._lose(error)
        self._streams.clear()
        self._tasks.cancel()
        if not self._closed.done():
            self._closed.set_result(None)
            if self.closed_callback is not None:
                self.closed_callback()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for stream in list(self._streams.values()):
            stream._flush()
            if self._paused:
                break

    # ------------------------------------------------------------------ public API

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    @property
    def streams(self) -> list[MuxStream]:
        return list(self._streams.values())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    def open_stream(self, header: dict[str, Any]) -> MuxStream:
        """Open a stream with a JSON ``header``; attach a protocol to the result.

        Raises:
            ConnectionResetError: the tunnel is closed.
            LocalProtocolError: GOAWAY was sent or received (the tunnel is draining).
        """
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError(f"tunnel {self.name} is closed")
        stream_id, frame = self.mux.open_stream(json.dumps(header).encode())
        self._write(frame)
        stream = MuxStream(self, stream_id, header)
        self._streams[stream_id] = stream
        return stream

    def drain(self, reason: str = "going away") -> None:
        """Send GOAWAY (no new streams either way); close the tunnel once no stream is left."""
        if self._transport is None:
            return
        if not self.mux.go_away_sent:
            self._write(self.mux.go_away(reason))
        self._draining = True
        self.close_reason = reason
        self._close_if_idle()

    def close(self, reason: str = "closed") -> None:
        """GOAWAY, then close the transport (flushing); every stream sees connection_lost."""
        if self._transport is None:
            return
        self.close_reason = reason
        if not self.mux.go_away_sent:
            self._write(self.mux.go_away(reason))
        self._flush_writes()
        self._transport.close()

    def abort(self, reason: str = "aborted") -> None:
        """Drop the tunnel now (dead peer, protocol error, terminated by a lock)."""
        if self._transport is not None:
            self.close_reason = reason
            self._transport.abort()

    async def wait_closed(self) -> None:
        """Return once the tunnel transport is gone."""
        await asyncio.shield(self._closed)

    # ------------------------------------------------------------------ used by MuxStream

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview[Any]) -> int:
        frame, sent = self.mux.send_data(stream_id, data)
        if sent:
            self._write(frame)
        return sent

    def send_eof(self, stream_id: int) -> None:
        self._write(self.mux.send_eof(stream_id))

    def send_close(self, stream_id: int, reason: str) -> None:
        if self.mux.is_open(stream_id) or stream_id in self._streams:
            try:
                self._write(self.mux.close_stream(stream_id, reason))
            except LocalProtocolError:
                pass  # we already closed it (close raced with abort): nothing to send

    def consumed(self, stream_id: int, n: int) -> None:
        frame = self.mux.data_consumed(stream_id, n)
        if frame:
            self._write(frame)

    def forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        self._close_if_idle()

    # ------------------------------------------------------------------ internals

    def _write(self, frame: bytes) -> None:
        """Queue ``frame``; the frames of one event-loop pass go out in one transport write
        (:meth:`_flush_writes`): one TLS record and one send for the streams that wrote in
        that pass, instead of one each (database sessions answering together)."""
        if not self._out:
            self.loop.call_soon(self._flush_writes)
        self._out.append(frame)

    def _flush_writes(self) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _dispatch(self, event: muxframe.Event) -> None:
        if isinstance(event, muxframe.DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._on_data(event.data)
        elif isinstance(event, muxframe.WindowUpdated):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._flush()
        elif isinstance(event, muxframe.StreamOpened):
            self._accept(event.stream_id, event.header)
        elif isinstance(event, muxframe.StreamEOF):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._on_eof()
        elif isinstance(event, muxframe.StreamClosed):
            # Acknowledge first: the mux forgets the id once both CLOSEs crossed.
            self._write(self.mux.close_stream(event.stream_id))
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._on_remote_close(event.reason)
        elif isinstance(event, muxframe.PingReceived):
            self._write(self.mux.pong(event.opaque))
        elif isinstance(event, muxframe.GoAway):
            log.info("tunnel %s: peer sent GOAWAY: %s", self.name, event.reason)
            self.close_reason = self.close_reason or f"peer going away: {event.reason}"
            self._draining = True
            self._close_if_idle()

    def _accept(self, stream_id: int, raw: bytes) -> None:
        try:
            header = json.loads(raw)
        except ValueError:
            header = None
        if self._on_stream is None or self._draining or not isinstance(header, dict):
            why = "bad stream header" if not isinstance(header, dict) else "streams not accepted"
            self._write(self.mux.close_stream(stream_id, why))
            return
        stream = MuxStream(self, stream_id, header)
        self._streams[stream_id] = stream
        result = self._on_stream(stream, header)
        if result is not None:
            self._tasks.spawn(self._run_handler(stream, result), f"tunnel-stream-{stream_id}")

    async def _run_handler(self, stream: MuxStream, handler: Awaitable[None]) -> None:
        try:
            await handler
        except Exception:
            log.exception("tunnel %s: stream handler failed", self.name)
            stream.terminate("stream handler failed")

    def _close_if_idle(self) -> None:
        if self._draining and not self._streams and self._transport is not None:
            self._flush_writes()
            self._transport.close()

    def _tick_period(self) -> float:
        return max(0.01, min(self._interval, self._timeout / 3))

    def _keepalive(self) -> None:
        if self._transport is None:
            return
        silent = self.loop.time() - self._last_heard
        if silent > self._timeout:
            log.warning("tunnel %s: no sign of life for %.1f s, closing", self.name, silent)
            self.abort(f"keepalive timeout after {silent:.1f} s")
            return
        if silent >= self._interval / 2 or self._pings == 0:
            self._pings += 1
            self._write(self.mux.ping(self._pings.to_bytes(8, "big")))
        self._timer = self.loop.call_later(self._tick_period(), self._keepalive)
