"""The app route: internal web apps at ``NAME.<proxy>`` on the proxy's one port, and TCP apps.

Layer: ``proxy`` (IO shell around the pure :mod:`bastion.protocols.apphost` and
:mod:`bastion.protocols.http1` decisions, RBAC and the JWT claims of :mod:`bastion.ca.jwt`).
The listener routes a TLS connection here when its SNI is ``NAME.<domain>``
(:func:`bastion.proxy.router.route`) and hands over the transport with the verified client
certificate, if any. One coroutine per connection then serves its requests in turn:

1. **Parse** the request head strictly (:func:`~bastion.protocols.http1.parse_request_head`:
   CRLF only, no obs-fold, no Content-Length with Transfer-Encoding, 16 KiB at most), so the
   proxy and the app cannot disagree on where a request ends.
2. **Host**: ``Host`` must name the same app as the SNI (else ``421``).
3. **Who**: the app's own cookie (``__Host-bastion_app_session``: HttpOnly, Secure,
   SameSite=Lax, host-only, bound to this app and the web session that launched it), or a
   client certificate routed to this app (``bsh apps login NAME``). Nobody: ``GET``/``HEAD``
   are sent to the login pages' launch (``/web/apps/NAME/launch``), other methods get ``401``.
   The answer is the same for apps that do not exist: a scanner learns nothing and never
   reaches an app.
4. **Admission** (cached per session for ``admission_ttl``): the gate (user, epoch, locks) and
   RBAC ``app_labels``; locks are also checked on every request from the lock watcher's
   in-memory view, and a lock ends the connection (and its WebSockets) through the live
   registry (one entry per connection and identity).
5. **Forward** over a pooled keep-alive connection to the app (direct, or a stream through the
   app agent's reverse tunnel when the app was registered by an agent): the head is rewritten
   once (path normalized, hop-by-hop headers dropped, identity headers ``Bastion-*``,
   ``X-Forwarded-*``, ``Forwarded`` stripped and set by us, our cookie removed from ``Cookie``,
   ``Bastion-Jwt-Assertion`` added: a JWT of the ``jwt`` CA, aud = the app's URI, at most one
   minute, reused for 30 s per session and app (:meth:`AppBackend.assertion`); the app's
   ``rewrite.headers`` with the user's trait templates expanded,
   :func:`~bastion.protocols.apphost.render_headers`), bodies are copied as they
   come (Content-Length or chunked, never buffered whole, never re-encoded). A ``101`` answer
   to an ``Upgrade: websocket`` request turns the connection into a byte relay.
6. **Audit**: ``app.session.start`` (cookie issued, or a certificate's first request on a
   connection), ``app.request`` per request (method, normalized path, status, bytes, duration;
   ``audit_requests`` ``writes`` logs only non-GET/HEAD, ``none`` none).

TCP apps (``tcp://host:port``) come with ALPN ``bastion-app/1`` and a certificate routed to
the app (:meth:`AppRoute.handle_tcp`): authorized once, relayed, audited start and end with
bytes. Clients that negotiate ALPN ``h2`` get HTTP/2: each stream is served as an HTTP/1.1
request here (:mod:`bastion.proxy.app_h2`). A proxy in its own process serves apps through
auth's API (:mod:`bastion.proxy.app_remote`: sessions, RBAC and the JWT asked of auth);
:meth:`AppRoute.refusing` (a one-line 503) is left for a proxy built without app access.
docs/app-access.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, quote, urlsplit

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes

from bastion.audit.emitter import Emitter
from bastion.auth.gate import IdentityGate
from bastion.clock import Clock
from bastion.errors import AccessDenied, BastionError, ConnectionProblem
from bastion.live.registry import LiveConnection, LiveRegistry
from bastion.locks.matcher import LockTargets, identity_targets
from bastion.locks.watcher import LockWatcher
from bastion.protocols.apphost import app_label, normalize_path, render_headers, split_host
from bastion.protocols.http1 import (
    BadMessage,
    ChunkedScanner,
    RequestHead,
    ResponseHead,
    find_head_end,
    parse_request_head,
    parse_response_head,
)
from bastion.proxy.app_audit import RequestAudit, request_audited, session_fields
from bastion.proxy.app_h2 import H2Stream, request_head
from bastion.proxy.relay import Relay
from bastion.runtime import as_transport
from bastion.tasks import TaskSet, retrieve_exception
from bastion.types.apps import App
from bastion.types.identity import Identity

__all__ = [
    "AUTH_PATH",
    "COOKIE",
    "AppBackend",
    "AppDialer",
    "AppRoute",
    "AppRouteDeps",
    "SessionLike",
]

log = logging.getLogger(__name__)

COOKIE = "__Host-bastion_app_session"
AUTH_PATH = "/x-bastion-auth"
JWT_HEADER = "Bastion-Jwt-Assertion"
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
_JWT_REUSE = 30.0
"""Seconds an assertion is reused for the same session (it is valid for 60)."""
_BUFFER = 256 * 1024
_IDLE_POOL = 64
"""Idle upstream connections kept per app."""
_KEEPALIVE_IDLE = 120.0
_NO_BODY = (204, 304)


class SessionLike(Protocol):
    @property
    def identity(self) -> Identity: ...
    @property
    def expires(self) -> datetime: ...
    @property
    def id(self) -> str: ...


class AppSessionStore(Protocol):
    async def redeem(self, code: str, app: str) -> tuple[str, SessionLike]: ...
    async def get(self, token: str, app: str) -> SessionLike | None: ...
    async def end(self, token: str) -> None: ...


class AppBackend(Protocol):
    """What the route needs of auth (:class:`bastion.auth.apps.AppAccess` in process)."""

    @property
    def sessions(self) -> AppSessionStore: ...
    async def authorize(self, identity: Identity, name: str) -> App: ...
    async def assertion(self, identity: Identity, app: App) -> str:
        """``Bastion-Jwt-Assertion`` for ``identity`` at ``app`` (valid one minute)."""
        ...


class AppDialer(Protocol):
    """Opens a stream to an app agent (:class:`bastion.tunnel.server.TunnelServer`)."""

    async def dial(
        self,
        host_id: str,
        header: dict[str, Any],
        protocol_factory: Callable[[], asyncio.BaseProtocol],
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class AppRouteDeps:
    access: AppBackend
    domain: str
    """The proxy's public host name: apps are ``NAME.<domain>``."""
    audit: Emitter
    registry: LiveRegistry
    clock: Clock
    locks: LockWatcher | None = None
    gate: IdentityGate | None = None
    audit_requests: Literal["all", "writes", "none"] = "all"
    audit_request_sample: float = 1.0
    """With ``audit_requests="all"``: the fraction of GET/HEAD requests logged (writes and
    WebSocket upgrades always are; :func:`~bastion.proxy.app_audit.request_audited`)."""
    connect_timeout: float = 10.0
    admission_ttl: float = 1.0
    tunnel: AppDialer | None = None
    """Reaches apps registered by an app agent (``spec.host_id``) through its reverse tunnel."""
    unavailable: str = ""
    """Set: this proxy serves no apps; every request to an app host gets this one line (503)
    and TCP apps are refused (:meth:`AppRoute.refusing`)."""


class _Side(asyncio.Protocol):
    """One transport, read into a buffer that the connection's coroutine consumes (reading
    paused above 256 KiB), with write flow control (:meth:`drain`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.lost = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self.last: ResponseHead | None = None
        """The last response head read here (an upstream side; its header section is taken
        over when repeated)."""
        self.made: tuple[object, ...] = ()
        """The client head made from :attr:`last` and what it was made from."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = as_transport(transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > _BUFFER and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.lost = True
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def more(self) -> None:
        """Wait for more bytes (or EOF)."""
        if self.eof:
            return
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self, n: int) -> bytes:
        buf = self.buf
        if n >= len(buf):  # all of it (the common case): one copy
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        if self._paused and len(self.buf) < _BUFFER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        if self.transport is None or self.lost:
            raise ConnectionResetError("connection lost")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("connection lost")
        if self._write_paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain
            if self.lost:
                raise ConnectionResetError("connection lost")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


@dataclass(slots=True)
class _Conn:
    identity: Identity | None
    client: tuple[str, int]
    label: str
    side: _Side | H2Stream
    started: bool = False
    live: LiveConnection | None = None
    live_key: str = ""
    upstream: _Side | None = None
    remote: str = ""
    audit_keys: list[str] = field(default_factory=list)
    """Sessions whose ``app.request`` writer this connection uses."""
    cert_who: _Who | None = None
    """The certificate identity whose session (this connection) started."""
    host: bytes = b""
    """The last ``Host`` value found to name this connection's app (checked once)."""
    cookie: bytes = b""
    token: str = ""
    """The last ``Cookie`` header and the app session token in it."""
    parent: _Conn | None = None
    """An HTTP/2 stream's connection: its live entry, session start and audit writers are
    the connection's."""
    cookie_of: object = None
    """The header list :attr:`cookie` was taken from."""
    last: RequestHead | None = None
    """The previous request head (its header section is taken over when repeated)."""
    forward: tuple[object, ...] = ()
    """The forwarded header lines of the last request and what they were made from (the
    client's header list, JWT, rewrite headers, target): reused while all are the same."""


@dataclass(slots=True)
class _Assertion:
    """The signed identity assertion of one session and app, kept across admissions."""

    value: str = ""
    at: float = 0.0
    signing: asyncio.Future[None] | None = None
    """A renewal signing aside while the current value is still valid."""


@dataclass(slots=True)
class _Admitted:
    app: App
    at: float
    jwt: _Assertion
    extra: bytes = b""
    """The app's static rewrite headers, encoded once."""
    targets: LockTargets | None = None
    """The lock targets of this identity and app (checked on every request)."""
    http: bool = False
    """The app is an HTTP app (``http://`` or ``https://``)."""
    target: _Target | None = None
    """How to reach the app (:meth:`AppRoute._target`), looked up once per admission."""


@dataclass(slots=True)
class _Who:
    identity: Identity
    key: str
    """Admission cache key (session id or certificate)."""
    session_id: str = ""


@dataclass(slots=True)
class _Target:
    """How to reach one app: direct (host, port, TLS) or through an agent's tunnel."""

    host_id: str
    host: str
    port: int
    tls: ssl.SSLContext | None
    host_header: bytes
    prefix: str
    idle: list[_Side] = field(default_factory=list)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


STANDALONE_REFUSAL = (
    "app access is not served by a proxy running in its own process yet: open apps through "
    "the all-in-one proxy (auth and proxy in one bastion start; docs/app-access.md)"
)
"""The one line app hosts get from a proxy in its own process."""


class _NoSessions:
    async def redeem(self, code: str, app: str) -> tuple[str, SessionLike]:
        raise AccessDenied(STANDALONE_REFUSAL)

    async def get(self, token: str, app: str) -> SessionLike | None:
        return None

    async def end(self, token: str) -> None:
        return None


class _NoApps:
    """The app backend of a proxy without app access: refuses everything."""

    sessions: AppSessionStore = _NoSessions()

    async def authorize(self, identity: Identity, name: str) -> App:
        raise AccessDenied(STANDALONE_REFUSAL)

    async def assertion(self, identity: Identity, app: App) -> str:
        raise AccessDenied(STANDALONE_REFUSAL)


class AppRoute:
    """Serves app connections handed over by the listener."""

    @classmethod
    def refusing(
        cls, domain: str, audit: Emitter, registry: LiveRegistry, clock: Clock
    ) -> AppRoute:
        """The app route of a proxy in its own process (no app access there yet): app hosts
        get :data:`STANDALONE_REFUSAL` instead of being passed to auth's web pages."""
        return cls(
            AppRouteDeps(
                access=_NoApps(),
                domain=domain,
                audit=audit,
                registry=registry,
                clock=clock,
                unavailable=STANDALONE_REFUSAL,
            )
        )

    def __init__(self, deps: AppRouteDeps) -> None:
        self._deps = deps
        self.domain = deps.domain.lower()
        self._admitted: dict[tuple[str, str], _Admitted] = {}
        self._admitting: dict[tuple[str, str], asyncio.Future[_Admitted]] = {}
        """Admissions being decided (one at a time per session and app)."""
        self._targets: dict[tuple[str, str, bool], _Target] = {}
        self._tasks = TaskSet()
        self._requests = RequestAudit(deps.audit)
        self._sample = deps.audit_request_sample if deps.audit_requests == "all" else 1.0
        """Below 1: reads are sampled (their events carry ``sample_rate``)."""
        self._contexts: dict[bool, ssl.SSLContext] = {}
        """TLS towards ``https://`` apps (key: ``insecure_skip_verify``), made when first
        needed (loading the system's CA store takes a while)."""
        self._running = False

    async def start(self) -> None:
        self._running = True

    async def close(self) -> None:
        self._running = False
        await self._tasks.cancel_all(timeout=5)
        await self._requests.close()
        for target in self._targets.values():
            for side in target.idle:
                side.abort()
            target.idle.clear()

    async def handle(
        self,
        transport: asyncio.Transport,
        identity: Identity | None,
        client: tuple[str, int],
        early: bytes = b"",
        label: str = "",
    ) -> None:
        """Serve one TLS connection (the listener's hand-off); ``label``: the app named by
        the SNI (every request's ``Host`` must name the same)."""
        if not self._running:
            transport.abort()
            return
        side = _Side()
        transport.set_protocol(side)
        side.connection_made(transport)
        if early:
            side.buf += early
        transport.resume_reading()
        conn = _Conn(identity, client, label, side, remote=f"{client[0]}:{client[1]}")
        ssl_object = transport.get_extra_info("ssl_object")
        h2 = ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"
        try:
            await (self._serve_h2(conn, side) if h2 else self._serve(conn))
        except (ConnectionError, OSError):
            pass
        finally:
            side.close()
            if conn.live is not None:
                self._deps.registry.remove(conn.live)
            if conn.upstream is not None:
                conn.upstream.abort()
            await self._end(conn)

    async def _end(self, conn: _Conn) -> None:
        """Commit the connection's queued request events, then (a certificate session is
        this connection) ``app.session.end``."""
        left = 0
        for key in conn.audit_keys:
            left += await self._requests.release(key)
        who = conn.cert_who
        if who is not None:
            await self._deps.audit.emit(
                "app.session.end",
                user=who.identity.user,
                app=conn.label,
                remote_addr=conn.remote,
                method="certificate",
                unaudited_requests=left,
            )

    # ------------------------------------------------------------------ HTTP/2

    async def _serve_h2(self, conn: _Conn, side: _Side) -> None:
        """Serve an HTTP/2 connection: each stream goes through :meth:`_request` as an
        HTTP/1.1 request (:mod:`bastion.proxy.app_h2`)."""
        h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        h2.local_settings.update({SettingCodes.MAX_CONCURRENT_STREAMS: 100})
        h2.initiate_connection()
        h2.increment_flow_control_window(1 << 24)
        streams: dict[int, H2Stream] = {}
        tasks: set[asyncio.Task[None]] = set()

        def flush() -> None:
            data = h2.data_to_send()
            if data and not side.lost:
                side.write(data)

        flush()
        try:
            while True:
                if side.buf:
                    try:
                        events = h2.receive_data(side.take(len(side.buf)))
                    except H2Error as exc:
                        log.info("app %s: HTTP/2 protocol error: %s", conn.label, exc)
                        flush()
                        return
                    for event in events:
                        if isinstance(event, RequestReceived):
                            headers = [(bytes(k), bytes(v)) for k, v in event.headers or []]
                            ended = event.stream_ended is not None
                            stream = self._h2_stream(h2, event.stream_id or 0, headers, side, flush)
                            streams[stream.stream_id] = stream
                            task = asyncio.ensure_future(
                                self._h2_request(conn, stream, headers, ended, streams)
                            )
                            tasks.add(task)
                            task.add_done_callback(tasks.discard)
                        elif isinstance(event, DataReceived):
                            found = streams.get(event.stream_id or 0)
                            if found is not None:
                                found.feed(event.data or b"", event.flow_controlled_length or 0)
                            else:
                                h2.acknowledge_received_data(
                                    event.flow_controlled_length or 0, event.stream_id or 0
                                )
                        elif isinstance(event, StreamEnded):
                            found = streams.get(event.stream_id or 0)
                            if found is not None:
                                found.end_body()
                        elif isinstance(event, StreamReset):
                            found = streams.pop(event.stream_id or 0, None)
                            if found is not None:
                                found.reset()
                        elif isinstance(event, WindowUpdated | RemoteSettingsChanged):
                            for each in list(streams.values()):
                                each.window_opened()
                        elif isinstance(event, ConnectionTerminated):
                            flush()
                            return
                    flush()
                if side.eof:
                    return
                try:
                    async with asyncio.timeout(_KEEPALIVE_IDLE if not tasks else None):
                        await side.more()
                except TimeoutError:
                    h2.close_connection()
                    flush()
                    return
        finally:
            for stream in streams.values():
                stream.reset()
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def _h2_stream(
        self,
        h2: H2Connection,
        stream_id: int,
        headers: list[tuple[bytes, bytes]],
        side: _Side,
        flush: Callable[[], None],
    ) -> H2Stream:
        method = next((v for k, v in headers if k == b":method"), b"")
        length = next((v for k, v in headers if k == b"content-length"), None)
        return H2Stream(
            h2, stream_id, flush, side.abort, head_only=method == b"HEAD", chunked=length is None
        )

    async def _h2_request(
        self,
        conn: _Conn,
        stream: H2Stream,
        headers: list[tuple[bytes, bytes]],
        ended: bool,
        streams: dict[int, H2Stream],
    ) -> None:
        view = _Conn(
            conn.identity, conn.client, conn.label, stream, remote=conn.remote, parent=conn
        )
        try:
            try:
                if ended:
                    stream.end_body()
                head = parse_request_head(request_head(headers, not ended))
            except BadMessage as exc:
                self._reply(view, exc.status, exc.message)
            else:
                await self._request(view, head)
            await stream.finish()
        except (ConnectionError, OSError):
            stream.reset()
        except Exception:
            log.exception("app %s: HTTP/2 stream %d failed", conn.label, stream.stream_id)
            stream.abort()
        finally:
            streams.pop(stream.stream_id, None)

    # ------------------------------------------------------------------ per request

    async def _serve(self, conn: _Conn) -> None:
        side = conn.side
        # Keep-alive idle limit: one timer per connection, not one per wait (asyncio.timeout
        # per request cost ~5% of the CPU per request): it closes a connection that waited
        # for its next request head through a whole period with no request served.
        loop = asyncio.get_running_loop()
        state = [0, 0, False]  # requests served, served at the last check, waiting for a head

        def watch() -> None:
            if state[2] and state[0] == state[1]:
                side.close()
                return
            state[1] = state[0]
            timer[0] = loop.call_later(_KEEPALIVE_IDLE, watch)

        timer = [loop.call_later(_KEEPALIVE_IDLE, watch)]
        try:
            while True:
                try:
                    end = find_head_end(side.buf)
                    if end < 0:
                        state[2] = True
                        while end < 0:
                            if side.eof:
                                return
                            await side.more()
                            end = find_head_end(side.buf)
                        state[2] = False
                    head = parse_request_head(side.take(end), conn.last)
                except BadMessage as exc:
                    self._reply(conn, exc.status, exc.message, close=True)
                    return
                conn.last = head
                state[0] += 1
                if not await self._request(conn, head):
                    return
        finally:
            timer[0].cancel()

    async def _request(self, conn: _Conn, head: RequestHead) -> bool:
        """Serve one request; False: close the client connection."""
        has_body = head.chunked or bool(head.content_length)
        host_value = head.get(b"host")
        host = host_value.decode("latin-1") if host_value is not None else ""
        if not host_value or host_value != conn.host:
            label = app_label(host, self.domain)
            if label is None or label != conn.label:
                return self._reply(conn, 421, "misdirected request", close=True)
            conn.host = host_value or b""
        if self._deps.unavailable:
            return self._reply(conn, 503, self._deps.unavailable, close=True)
        label = conn.label
        if not head.target.startswith("/"):
            return self._reply(conn, 400, "bad request target", close=True)
        raw_path, _, query = head.target.partition("?")
        if raw_path == AUTH_PATH:
            return await self._redeem(conn, head, label, query, host) and not has_body
        who = await self._identify(head, label, conn)
        if who is None:
            return self._to_login(conn, head, label, host) and not has_body
        try:
            admitted = await self._admit(who, label, conn)
        except BastionError as exc:
            log.info("app %s refused for %s: %s", label, who.identity.user, exc.message)
            return self._reply(
                conn, 404, f'app "{label}" not found or access denied', close=has_body
            )
        if not admitted.http:
            return self._reply(conn, 404, f'app "{label}" not found or access denied', True)
        path = normalize_path(raw_path)
        if path is None:
            return self._reply(conn, 400, "bad request path", close=True)
        self._register(conn, who, label)
        return await self._forward(conn, head, admitted, who, path, query, host)

    async def _identify(self, head: RequestHead, label: str, conn: _Conn) -> _Who | None:
        if head.headers is not conn.cookie_of:  # not a repeated header section
            conn.cookie_of = head.headers
            raw = b"\0".join(v for low, _, v in head.headers if low == b"cookie")
            if raw != conn.cookie:
                conn.cookie, conn.token = raw, _cookie_value(head)
        token = conn.token
        if token:
            session = await self._deps.access.sessions.get(token, label)
            if session is not None:
                return _Who(session.identity, f"s:{session.id}", session.id)
        identity = conn.identity
        if identity is not None and identity.route is not None and identity.route.app == label:
            return _Who(identity, f"c:{id(conn)}")
        return None

    async def _admit(self, who: _Who, label: str, conn: _Conn) -> _Admitted:
        deps = self._deps
        tick = time.monotonic()
        key = (who.key, label)
        hit = self._admitted.get(key)
        if hit is None or tick - hit.at >= deps.admission_ttl:
            # Every connection of a session finds the admission stale in the same instant:
            # one of them decides, the others wait for that decision (and share a refusal).
            flight = self._admitting.get(key)
            if flight is None:
                flight = asyncio.ensure_future(self._readmit(key, who, label, conn, hit, tick))
                self._admitting[key] = flight
                flight.add_done_callback(retrieve_exception)
            hit = await asyncio.shield(flight)
        if deps.locks is not None:
            assert hit.targets is not None
            deps.locks.check(hit.targets, deps.locks.cluster_mode).raise_if_denied()
        jwt = hit.jwt
        if tick - jwt.at >= _JWT_REUSE:
            if jwt.signing is None:  # one signing at a time per session and app
                jwt.signing = asyncio.ensure_future(self._sign(who, hit.app, jwt, tick))
                jwt.signing.add_done_callback(retrieve_exception)
            if not jwt.value or tick - jwt.at >= _JWT_REUSE * 1.5:
                await asyncio.shield(jwt.signing)  # no valid one to send meanwhile
            # else: the current one is valid for 30 s more and is sent while it renews
        return hit

    async def _sign(self, who: _Who, app: App, jwt: _Assertion, tick: float) -> None:
        try:
            jwt.value, jwt.at = await self._deps.access.assertion(who.identity, app), tick
        except BastionError as exc:  # requests waiting for it are refused with it
            log.info("app assertion for %s not signed: %s", who.identity.user, exc.message)
            raise
        finally:
            jwt.signing = None

    async def _readmit(
        self,
        key: tuple[str, str],
        who: _Who,
        label: str,
        conn: _Conn,
        hit: _Admitted | None,
        tick: float,
    ) -> _Admitted:
        deps = self._deps
        try:
            if deps.gate is not None:
                await deps.gate.admit(who.identity, "web", f"app/{label}", conn.remote)
            app = await deps.access.authorize(who.identity, label)
        finally:
            self._admitting.pop(key, None)
        if len(self._admitted) > 10_000:
            self._admitted.clear()
        ident = who.identity
        extra = render_headers(app.spec.rewrite.headers, ident.traits, ident.logins)
        hit = _Admitted(app, tick, hit.jwt if hit else _Assertion(), extra)
        hit.targets = identity_targets(who.identity, nodes=(label,))
        hit.http = app.spec.uri.startswith(("http://", "https://"))
        self._admitted[key] = hit
        root = conn.parent or conn
        if not who.session_id and not root.started:
            root.started = True
            root.cert_who = who
            await self._audit_start(who, label, root, "certificate")
        return hit

    def _register(self, conn: _Conn, who: _Who, label: str) -> None:
        """One live entry per connection and identity: a lock ends the connection."""
        conn = conn.parent or conn
        if conn.live is not None and conn.live_key == who.key:
            return
        if conn.live is not None:
            self._deps.registry.remove(conn.live)

        async def terminate(reason: str) -> None:
            conn.side.abort()
            if conn.upstream is not None:
                conn.upstream.abort()

        conn.live_key = who.key
        conn.live = self._deps.registry.add(
            LiveConnection(
                kind="app",
                identity=who.identity,
                target=label,
                remote_addr=conn.remote,
                session_id=who.session_id,
                started=self._deps.clock.now(),
                terminate=terminate,
                extra={"request": "http"},
            )
        )

    def _to_login(self, conn: _Conn, head: RequestHead, label: str, host: str) -> bool:
        if head.method not in ("GET", "HEAD"):
            return self._reply(
                conn, 401, "sign in first: open this app in a browser, or bsh apps login"
            )
        _, port = split_host(host)
        where = f"{self.domain}:{port}" if port and port != 443 else self.domain
        location = f"https://{where}/web/apps/{label}/launch?path=" + quote(head.target, safe="")
        return self._reply(conn, 302, "", headers=[("Location", location)])

    async def _redeem(
        self, conn: _Conn, head: RequestHead, label: str, query: str, host: str
    ) -> bool:
        params = parse_qs(query, max_num_fields=4)
        code = (params.get("code") or [""])[0]
        then = (params.get("then") or ["/"])[0]
        try:
            token, session = await self._deps.access.sessions.redeem(code, label)
        except AccessDenied as exc:
            return self._reply(conn, 403, exc.message)
        path = then.split("?", 1)[0]
        if (
            not then.startswith("/")
            or then.startswith("//")
            or normalize_path(path) is None
            or any(ord(c) < 0x21 or ord(c) > 0x7E for c in then)
        ):
            then = "/"
        max_age = max(1, int((session.expires - self._deps.clock.now()).total_seconds()))
        cookie = f"{COOKIE}={token}; HttpOnly; Max-Age={max_age}; Path=/; SameSite=Lax; Secure"
        await self._audit_start(_Who(session.identity, "", session.id), label, conn, "browser")
        return self._reply(conn, 303, "", headers=[("Location", then), ("Set-Cookie", cookie)])

    async def _audit_start(self, who: _Who, label: str, conn: _Conn, method: str) -> None:
        await self._deps.audit.emit(
            "app.session.start",
            user=who.identity.user,
            app=label,
            remote_addr=conn.remote,
            session_id=who.session_id,
            method=method,
            device_id=who.identity.device_id,
            **session_fields(self._deps.audit_requests, self._deps.audit_request_sample),  # type: ignore[arg-type]
        )

    def _reply(
        self,
        conn: _Conn,
        status: int,
        message: str,
        close: bool = False,
        headers: list[tuple[str, str]] | None = None,
    ) -> bool:
        """Answer from the proxy itself; returns whether the connection stays open."""
        body = (message + "\n").encode() if message else b""
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
        lines += [f"{k}: {v}" for k, v in headers or ()]
        lines += [
            "Cache-Control: no-store",
            "Referrer-Policy: no-referrer",
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
        ]
        if close:
            lines.append("Connection: close")
        try:
            conn.side.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        except ConnectionError:
            return False
        return not close

    # ------------------------------------------------------------------ forwarding

    def _target(self, app: App) -> _Target:
        spec = app.spec
        key = (spec.host_id, spec.uri, spec.insecure_skip_verify)
        found = self._targets.get(key)
        if found is not None:
            return found
        parts = urlsplit(spec.uri)
        tls: ssl.SSLContext | None = None
        default = 80
        if parts.scheme == "https":
            default = 443
            tls = self._tls(spec.insecure_skip_verify)
        if spec.host_id and self._deps.tunnel is not None:
            tls = None  # the agent speaks TLS to the app
        host = parts.hostname or ""
        port = parts.port or default
        found = _Target(
            host_id=spec.host_id if self._deps.tunnel is not None else "",
            host=host,
            port=port,
            tls=tls,
            host_header=parts.netloc.encode("idna"),
            prefix=parts.path.rstrip("/"),
        )
        if len(self._targets) > 1000:
            self._targets.clear()
        self._targets[key] = found
        return found

    def _tls(self, insecure: bool) -> ssl.SSLContext:
        found = self._contexts.get(insecure)
        if found is None:
            found = self._contexts[insecure] = ssl.create_default_context()
            if insecure:
                found.check_hostname = False
                found.verify_mode = ssl.CERT_NONE
        return found

    async def _open(self, target: _Target, app: App, who: _Who, conn: _Conn) -> _Side:
        side = _Side()
        async with asyncio.timeout(self._deps.connect_timeout):
            if target.host_id:
                assert self._deps.tunnel is not None
                header = {
                    "type": "app",
                    "app": app.metadata.name,
                    "user": who.identity.user,
                    "client_addr": conn.remote,
                }
                await self._deps.tunnel.dial(target.host_id, header, lambda: side)
            else:
                loop = asyncio.get_running_loop()
                await loop.create_connection(
                    lambda: side,
                    target.host,
                    target.port,
                    ssl=target.tls,
                    server_hostname=target.host if target.tls is not None else None,
                )
        return side

    async def _upstream(
        self, target: _Target, app: App, who: _Who, conn: _Conn
    ) -> tuple[_Side, bool]:
        while target.idle:
            side = target.idle.pop()
            if not side.eof and not side.buf:
                return side, True
            side.abort()
        return await self._open(target, app, who, conn), False

    def _release(self, target: _Target, side: _Side) -> None:
        if side.eof or side.buf or len(target.idle) >= _IDLE_POOL:
            side.close()
        else:
            target.idle.append(side)

    def _head(
        self,
        head: RequestHead,
        admitted: _Admitted,
        conn: _Conn,
        target: _Target,
        path: str,
        query: str,
        host: str,
        upgrade: bool,
    ) -> bytes:
        line = f"{head.method} {target.prefix}{path}{'?' + query if query else ''} HTTP/1.1\r\n"
        made = conn.forward
        if (  # the same header section as the last request, for the same identity and app
            made
            and made[0] is head.headers
            and made[1] is admitted.jwt.value
            and made[2] is admitted.extra
            and made[3] is target
            and made[4] == host
        ):
            return line.encode("latin-1") + made[5]  # type: ignore[operator]
        fields = self._fields(head, admitted, conn, target, host, upgrade)
        conn.forward = (head.headers, admitted.jwt.value, admitted.extra, target, host, fields)
        return line.encode("latin-1") + fields

    def _fields(
        self,
        head: RequestHead,
        admitted: _Admitted,
        conn: _Conn,
        target: _Target,
        host: str,
        upgrade: bool,
    ) -> bytes:
        """The header section forwarded to the app (a function of the client's header list,
        which also decides ``host`` and ``upgrade``, the JWT, the rewrite headers, the
        target and the client's address)."""
        out = bytearray(b"Host: " + target.host_header + b"\r\n")
        listed = head.connection_tokens
        for low, name, value in head.headers:
            if low in _HOP or low in listed or low == b"expect" or _identity_header(low):
                continue
            if low == b"cookie":
                value = _strip_cookie(value.decode("latin-1")).encode("latin-1")
                if not value:
                    continue
            out += name + b": " + value + b"\r\n"
        if head.chunked:
            out += b"Transfer-Encoding: chunked\r\n"
        elif head.content_length is not None:
            out += b"Content-Length: %d\r\n" % head.content_length
        if upgrade:
            out += b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
        out += (
            f"X-Forwarded-For: {conn.client[0]}\r\nX-Forwarded-Proto: https\r\n"
            f"X-Forwarded-Host: {host}\r\n{JWT_HEADER}: {admitted.jwt.value}\r\n"
        ).encode("latin-1")
        out += admitted.extra
        out += b"\r\n"
        return bytes(out)

    async def _forward(
        self,
        conn: _Conn,
        head: RequestHead,
        admitted: _Admitted,
        who: _Who,
        path: str,
        query: str,
        host: str,
    ) -> bool:
        start = time.monotonic()
        app = admitted.app
        label = app.metadata.name
        target = admitted.target
        if target is None:
            target = admitted.target = self._target(app)
        upgrade = (
            b"upgrade" in head.connection_tokens
            and (head.get(b"upgrade") or b"").lower() == b"websocket"
        )
        data = self._head(head, admitted, conn, target, path, query, host, upgrade)
        has_body = head.chunked or bool(head.content_length)
        status, sent, received = 502, 0, 0
        keep = not head.close
        up: _Side | None = None
        responded = False
        if has_body and (head.get(b"expect") or b"").lower() == b"100-continue":
            conn.side.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            for attempt in range(2):
                try:
                    up, reused = await self._upstream(target, app, who, conn)
                except (OSError, BastionError, TimeoutError) as exc:
                    log.warning("app %s unreachable: %s", label, exc)
                    return self._reply(conn, 502, f'app "{label}" is not reachable', close=True)
                conn.upstream = up
                try:
                    up.write(data)
                    if has_body:
                        received = await self._copy_body(conn.side, up, head)
                    response = await self._response_head(up)
                    break
                except _Stale:
                    up.abort()
                    if not reused or has_body or attempt:
                        raise
            else:
                return False
            while 100 <= response.status < 200 and response.status != 101:
                response = await self._response_head(up)  # 100 Continue: answered by us
            status = response.status
            if response.status == 101:
                if not upgrade:
                    raise _Refused(502, "the app switched protocols unasked")
                responded = True
                conn.side.write(self._client_head(response, True, False))
                counts = await self._relay(conn, up)
                received += counts[0]
                sent += counts[1]
                return False
            bodyless = head.method == "HEAD" or response.status in _NO_BODY
            length = response.content_length
            until_close = not bodyless and not response.chunked and length is None
            keep = keep and not until_close
            responded = True
            out = self._client_head(response, False, not keep, up)
            if bodyless:
                conn.side.write(out)
            elif length is not None and len(up.buf) >= length:  # all here: one write
                conn.side.write(out + up.take(length) if length else out)
                sent = length
            else:  # the head goes out with the first piece of the body (one TLS record)
                sent = await self._copy_body(up, conn.side, response, until_close, out)
            await conn.side.drain()
            if response.close or until_close:
                up.close()
            else:
                self._release(target, up)
            conn.upstream = None
            return keep
        except BadMessage as exc:
            if up is not None:
                up.abort()
            conn.upstream = None
            if responded:
                return False
            status = exc.status
            if exc.status != 502:  # the client's body was malformed
                return self._reply(conn, exc.status, exc.message, close=True)
            log.warning("app %s: %s", label, exc.message)
            return self._reply(conn, 502, f'app "{label}" sent a bad response', close=True)
        except (_Stale, _Refused, ConnectionError, OSError, TimeoutError) as exc:
            if up is not None:
                up.abort()
            conn.upstream = None
            log.info("app %s: connection ended: %s", label, exc)
            if not responded and not conn.side.lost:
                status = 502
                return self._reply(conn, 502, f'app "{label}" is not reachable', close=True)
            return False
        finally:
            if self._deps.audit_requests != "none" and request_audited(
                self._deps.audit_requests, self._sample, head.method, upgrade, random.random()
            ):
                behind = self._audit_request(
                    conn, head, who, label, path, status, received, sent, start, upgrade
                )
                if behind:  # back-pressure: the session's writer is far behind
                    await self._requests.room(who.key)

    async def _response_head(self, up: _Side) -> ResponseHead:
        end = find_head_end(up.buf)
        first = True
        while end < 0:
            if up.eof:
                raise (
                    _Stale("the app closed the connection")
                    if first
                    else ConnectionResetError("the app closed the connection")
                )
            await up.more()
            first = first and not up.buf
            end = find_head_end(up.buf)
        up.last = parse_response_head(up.take(end), up.last)
        return up.last

    def _client_head(
        self, response: ResponseHead, upgrade: bool, close: bool, up: _Side | None = None
    ) -> bytes:
        """The response head for the client; ``up``: the app connection it came from, which
        keeps the last one made (reused for the same status line and header list)."""
        if up is not None:
            made = up.made
            if (
                made
                and made[0] is response.headers
                and made[1] == response.status
                and made[2] == response.reason
                and made[3] == (upgrade, close)
            ):
                return made[4]  # type: ignore[return-value]
            made_now = self._client_head(response, upgrade, close)
            up.made = (
                response.headers,
                response.status,
                response.reason,
                (upgrade, close),
                made_now,
            )
            return made_now
        out = bytearray(b"HTTP/1.1 %d " % response.status + response.reason + b"\r\n")
        for low, name, value in response.headers:
            if low in _HOP:
                continue
            if low in response.connection_tokens:
                continue
            out += name + b": " + value + b"\r\n"
        if response.chunked:
            out += b"Transfer-Encoding: chunked\r\n"
        elif response.content_length is not None:
            out += b"Content-Length: %d\r\n" % response.content_length
        if upgrade:
            out += b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
        elif close:
            out += b"Connection: close\r\n"
        out += b"\r\n"
        return bytes(out)

    async def _copy_body(
        self,
        src: _Side | H2Stream,
        dst: _Side | H2Stream,
        head: RequestHead | ResponseHead,
        until_close: bool = False,
        prefix: bytes = b"",
    ) -> int:
        """Copy one message body from ``src`` to ``dst`` as it comes, after ``prefix`` (sent
        with its first piece); returns the body's size."""
        total = 0
        scanner = ChunkedScanner() if head.chunked else None
        remaining = head.content_length or 0
        while True:
            if src.buf:
                if scanner is not None:
                    n = scanner.feed(src.buf)
                elif until_close:
                    n = len(src.buf)
                else:
                    n = min(remaining, len(src.buf))
                    remaining -= n
                if n:
                    if prefix:
                        dst.write(prefix + src.take(n))
                        prefix = b""
                    else:
                        dst.write(src.take(n))
                    total += n
                    await dst.drain()
            if (scanner is not None and scanner.done) or (
                scanner is None and not until_close and remaining == 0
            ):
                if prefix:
                    dst.write(prefix)
                return total
            if prefix and not src.buf:  # nothing more yet: let the head go now
                dst.write(prefix)
                prefix = b""
            if src.eof:
                if until_close and scanner is None:
                    return total
                raise ConnectionResetError("connection closed in the middle of a body")
            await src.more()

    async def _relay(self, conn: _Conn, up: _Side) -> tuple[int, int]:
        """After a 101: bytes both ways until either side ends; (to app, to client)."""
        counts = [0, 0]

        async def pump(src: _Side | H2Stream, dst: _Side | H2Stream, index: int) -> None:
            while True:
                if src.buf:
                    chunk = src.take(len(src.buf))
                    counts[index] += len(chunk)
                    dst.write(chunk)
                    await dst.drain()
                if src.eof:
                    return
                await src.more()

        tasks = [
            asyncio.ensure_future(pump(conn.side, up, 0)),
            asyncio.ensure_future(pump(up, conn.side, 1)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            up.close()
        return counts[0], counts[1]

    def _audit_request(
        self,
        conn: _Conn,
        head: RequestHead,
        who: _Who,
        label: str,
        path: str,
        status: int,
        received: int,
        sent: int,
        start: float,
        websocket: bool,
    ) -> bool:
        """Queue the ``app.request`` event of a request :func:`request_audited` chose; True
        when the session's writer is behind (the caller waits for room)."""
        fields: dict[str, object] = {
            "app": label,
            "method": head.method,
            "path": path,
            "status": status,
            "bytes_in": received,
            "bytes_out": sent,
            "duration_ms": round((time.monotonic() - start) * 1000, 1),
        }
        if websocket:
            fields["websocket"] = True
        elif self._sample < 1.0 and head.method in ("GET", "HEAD"):
            fields["sample_rate"] = self._sample  # one of a sample of the reads
        conn = conn.parent or conn
        if who.key not in conn.audit_keys:
            conn.audit_keys.append(who.key)
            self._requests.acquire(
                who.key, {"user": who.identity.user, "session_id": who.session_id}
            )
        return self._requests.queue(who.key, fields)

    # ------------------------------------------------------------------ TCP apps

    async def handle_tcp(
        self,
        transport: asyncio.Transport,
        identity: Identity,
        client: tuple[str, int],
        early: bytes = b"",
    ) -> None:
        """Serve one ``bastion-app/1`` connection: a certificate routed to a ``tcp://`` app
        (``bsh proxy app NAME``); bytes are relayed to the app, start and end audited."""
        deps = self._deps
        remote = f"{client[0]}:{client[1]}"
        name = identity.route.app if identity.route is not None else ""
        relay = Relay(name=f"app {name} {remote}")
        try:
            if not name:
                raise AccessDenied("this certificate is not routed to an app (bsh apps login)")
            async with asyncio.timeout(deps.connect_timeout):
                if deps.gate is not None:
                    await deps.gate.admit(identity, "web", f"app/{name}", remote)
                app = await deps.access.authorize(identity, name)
                if not app.spec.uri.startswith("tcp://"):
                    raise AccessDenied(f'app "{name}" is not a TCP app: open https://{name}...')
                if deps.locks is not None:
                    targets = identity_targets(identity, nodes=(name,))
                    deps.locks.check(targets, deps.locks.cluster_mode).raise_if_denied()
                await self._dial_tcp(app, identity, remote, relay)
        except (BastionError, OSError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, BastionError) else str(exc) or "timed out"
            await deps.audit.emit(
                "app.session.start",
                outcome="failure",
                user=identity.user,
                app=name,
                remote_addr=remote,
                reason=reason,
                method="tcp",
            )
            transport.abort()
            return
        relay.attach_a(transport, early)
        relay.start()

        async def terminate(reason: str) -> None:
            relay.terminate(reason)

        live = deps.registry.add(
            LiveConnection(
                kind="app",
                identity=identity,
                target=name,
                remote_addr=remote,
                started=deps.clock.now(),
                terminate=terminate,
                extra={"request": "tcp"},
            )
        )
        await deps.audit.emit(
            "app.session.start",
            user=identity.user,
            app=name,
            remote_addr=remote,
            method="tcp",
            device_id=identity.device_id,
        )
        try:
            await relay.wait_closed()
        finally:
            deps.registry.remove(live)
            await deps.audit.emit(
                "app.session.end",
                user=identity.user,
                app=name,
                remote_addr=remote,
                bytes_in=relay.bytes_a_to_b,
                bytes_out=relay.bytes_b_to_a,
                reason=relay.reason,
                method="tcp",
            )

    async def _dial_tcp(self, app: App, identity: Identity, remote: str, relay: Relay) -> None:
        spec = app.spec
        if spec.host_id and self._deps.tunnel is not None:
            header = {
                "type": "app",
                "app": app.metadata.name,
                "user": identity.user,
                "client_addr": remote,
            }
            await self._deps.tunnel.dial(spec.host_id, header, lambda: relay.b)
            return
        parts = urlsplit(spec.uri)
        if not parts.hostname or not parts.port:
            raise ConnectionProblem(f"app {app.metadata.name}: bad uri {spec.uri}")
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: relay.b, parts.hostname, parts.port)


class _Stale(ConnectionResetError):
    """A pooled connection the app had closed: retried once on a fresh one."""


_REASONS = {
    302: "Found",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _identity_header(low: bytes) -> bool:
    """``Bastion-*``, ``X-Forwarded-*``, ``Forwarded``, ``X-Real-Ip`` (see
    :func:`bastion.types.apps.is_identity_header`), on a lowercase name."""
    return low.startswith((b"bastion-", b"x-forwarded-", b"x-bastion-")) or low in (
        b"forwarded",
        b"x-real-ip",
    )


def _cookie_value(head: RequestHead) -> str:
    for low, _, value in head.headers:
        if low != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            name, _, val = part.strip().partition("=")
            if name == COOKIE:
                return val.strip()
    return ""


def _strip_cookie(value: str) -> str:
    """The ``Cookie`` header without our session cookie (the app never sees it)."""
    kept = [p for p in value.split(";") if p.strip().split("=", 1)[0].strip() != COOKIE]
    return ";".join(kept).strip()
