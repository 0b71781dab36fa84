"""The app route: internal web apps at ``NAME.<proxy>`` on the proxy's one port.

Layer: ``proxy`` (IO shell around the pure :mod:`bastion.protocols.apphost` decisions, RBAC and
the JWT claims of :mod:`bastion.ca.jwt`). The listener routes a TLS connection here when its
SNI is ``NAME.<domain>`` (:func:`bastion.proxy.router.route`) and hands over the transport with
the verified client certificate, if any. An aiohttp server protocol then serves it, per request:

1. **Host**: ``Host`` must name the same app as the SNI (else ``421``).
2. **Who**: the app's own cookie (``__Host-bastion_app_session``: HttpOnly, Secure,
   SameSite=Lax, host-only, bound to this app and the web session that launched it), or a
   client certificate routed to this app (``bsh apps login NAME``). Nobody: ``GET``/``HEAD``
   are sent to the login pages' launch (``/web/apps/NAME/launch``), other methods get ``401``.
   The answer is the same for apps that do not exist: a scanner learns nothing and never
   reaches an app.
3. **Admission** (cached per session for ``admission_ttl``): the gate (user, epoch, locks) and
   RBAC ``app_labels``; locks are also checked on every request from the lock watcher's
   in-memory view, and a lock ends open requests and WebSockets through the live registry.
4. **Forward** (HTTP/1.1; bodies streamed both ways, never buffered whole; WebSockets
   relayed message by message) to the app's URI with the path normalized once
   (:func:`~bastion.protocols.apphost.normalize_path`), hop-by-hop headers dropped, identity
   headers (``Bastion-*``, ``X-Forwarded-*``, ``Forwarded``) stripped and set by us, our cookie
   removed from ``Cookie``, and ``Bastion-Jwt-Assertion`` added (a JWT of the ``jwt`` CA, aud =
   the app's URI, at most one minute).
5. **Audit**: ``app.session.start`` (cookie issued, or a certificate's first request on a
   connection), ``app.session.end`` (a cookie whose session ended), ``app.request`` per request
   (method, normalized path, status, bytes, duration; ``audit_requests`` ``writes`` logs only
   non-GET/HEAD, ``none`` none).

The proxy reaches apps directly (the app agent's reverse tunnel is a later step,
docs/app-access.md).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from bastion.audit.emitter import Emitter
from bastion.auth.gate import IdentityGate
from bastion.ca.jwt import JwtKey, app_claims
from bastion.clock import Clock
from bastion.errors import AccessDenied, BastionError
from bastion.live.registry import LiveConnection, LiveRegistry
from bastion.locks.matcher import identity_targets
from bastion.locks.watcher import LockWatcher
from bastion.protocols.apphost import app_label, normalize_path, split_host
from bastion.tasks import TaskSet, spawn
from bastion.types.apps import App, is_identity_header
from bastion.types.identity import Identity

__all__ = ["AUTH_PATH", "COOKIE", "AppBackend", "AppRoute", "AppRouteDeps", "SessionLike"]

log = logging.getLogger(__name__)

COOKIE = "__Host-bastion_app_session"
AUTH_PATH = "/x-bastion-auth"
JWT_HEADER = "Bastion-Jwt-Assertion"
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_WS_SKIP = _HOP | {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
}
_JWT_REUSE = 30.0
"""Seconds an assertion is reused for the same session (it is valid for 60)."""


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
    async def signer(self) -> JwtKey: ...


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
    connect_timeout: float = 10.0
    admission_ttl: float = 1.0


@dataclass(slots=True)
class _Conn:
    identity: Identity | None
    client: tuple[str, int]
    label: str | None
    started: bool = False


@dataclass(slots=True)
class _Admitted:
    app: App
    at: float
    jwt: str = ""
    jwt_at: float = 0.0


@dataclass(slots=True)
class _Who:
    identity: Identity
    key: str
    """Admission cache key (session id or certificate)."""
    session_id: str = ""


class AppRoute:
    """Serves app connections handed over by the listener."""

    def __init__(self, deps: AppRouteDeps) -> None:
        self._deps = deps
        self.domain = deps.domain.lower()
        self._conns: weakref.WeakKeyDictionary[asyncio.BaseTransport, _Conn] = (
            weakref.WeakKeyDictionary()
        )
        self._admitted: dict[tuple[str, str], _Admitted] = {}
        self._tasks = TaskSet()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._insecure = ssl.create_default_context()
        self._insecure.check_hostname = False
        self._insecure.verify_mode = ssl.CERT_NONE

    async def start(self) -> None:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._deps.connect_timeout, sock_read=None
            ),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    async def close(self) -> None:
        await self._tasks.cancel_all(timeout=5)
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

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
        if self._runner is None or self._runner.server is None:
            transport.abort()
            return
        self._conns[transport] = _Conn(identity, client, label or None)
        protocol = self._runner.server()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if early:
            protocol.data_received(early)
        transport.resume_reading()

    # ------------------------------------------------------------------ per request

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        conn = self._conns.get(transport) if transport is not None else None
        label = app_label(request.host, self.domain)
        if conn is None or label is None or label != conn.label:
            return _text(421, "misdirected request")
        raw_path = request.raw_path.split("?", 1)[0]
        if raw_path == AUTH_PATH:
            return await self._redeem(request, label, conn)
        who = await self._identify(request, label, conn)
        if who is None:
            return self._to_login(request, label)
        try:
            admitted = await self._admit(who, label, conn)
        except BastionError as exc:
            log.info("app %s refused for %s: %s", label, who.identity.user, exc.message)
            return _text(404, f'app "{label}" not found or access denied')
        path = normalize_path(raw_path)
        if path is None:
            return _text(400, "bad request path")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, admitted, who, conn, path)
        return await self._forward(request, admitted, who, conn, path)

    async def _identify(self, request: web.Request, label: str, conn: _Conn) -> _Who | None:
        token = request.cookies.get(COOKIE, "")
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
            if deps.gate is not None:
                remote = f"{conn.client[0]}:{conn.client[1]}"
                await deps.gate.admit(who.identity, "web", f"app/{label}", remote)
            app = await deps.access.authorize(who.identity, label)
            if len(self._admitted) > 10_000:
                self._admitted.clear()
            hit = _Admitted(app, tick, hit.jwt if hit else "", hit.jwt_at if hit else 0.0)
            self._admitted[key] = hit
            if not who.session_id and not conn.started:
                conn.started = True
                await self._audit_start(who, label, conn, "certificate")
        if deps.locks is not None:
            targets = identity_targets(who.identity, nodes=(label,))
            deps.locks.check(targets, deps.locks.cluster_mode).raise_if_denied()
        if tick - hit.jwt_at >= _JWT_REUSE:
            signer = await deps.access.signer()
            claims = app_claims(who.identity, hit.app.spec.uri, deps.clock.now())
            hit.jwt, hit.jwt_at = signer.sign(claims), tick
        return hit

    def _to_login(self, request: web.Request, label: str) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _text(401, "sign in first: open this app in a browser, or bsh apps login")
        _, port = split_host(request.host)
        target = URL.build(
            scheme="https",
            host=self.domain,
            port=port if port and port != 443 else None,
            path=f"/web/apps/{label}/launch",
            query={"path": request.raw_path},
        )
        response = web.Response(status=302, headers={"Location": str(target)})
        _no_store(response)
        return response

    async def _redeem(self, request: web.Request, label: str, conn: _Conn) -> web.StreamResponse:
        query = parse_qs(request.query_string, max_num_fields=4)
        code = (query.get("code") or [""])[0]
        then = (query.get("then") or ["/"])[0]
        try:
            token, session = await self._deps.access.sessions.redeem(code, label)
        except AccessDenied as exc:
            return _text(403, exc.message)
        path = then.split("?", 1)[0]
        if not then.startswith("/") or then.startswith("//") or normalize_path(path) is None:
            then = "/"
        response = web.Response(status=303, headers={"Location": then})
        _no_store(response)
        max_age = max(1, int((session.expires - self._deps.clock.now()).total_seconds()))
        response.set_cookie(
            COOKIE, token, path="/", max_age=max_age, secure=True, httponly=True, samesite="Lax"
        )
        await self._audit_start(_Who(session.identity, "", session.id), label, conn, "browser")
        return response

    async def _audit_start(self, who: _Who, label: str, conn: _Conn, method: str) -> None:
        await self._deps.audit.emit(
            "app.session.start",
            user=who.identity.user,
            app=label,
            remote_addr=f"{conn.client[0]}:{conn.client[1]}",
            session_id=who.session_id,
            method=method,
            device_id=who.identity.device_id,
        )

    # ------------------------------------------------------------------ forwarding

    def _headers(
        self, request: web.Request, admitted: _Admitted, conn: _Conn, skip: frozenset[str]
    ) -> CIMultiDict[str]:
        listed = {t.strip().lower() for t in request.headers.get("Connection", "").split(",") if t}
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in request.headers.items():
            low = name.lower()
            if low in skip or low in listed or is_identity_header(name):
                continue
            if low == "cookie":
                value = _strip_cookie(value)
                if not value:
                    continue
            headers.add(name, value)
        if request.content_length is not None and "content-length" not in skip:
            headers["Content-Length"] = str(request.content_length)
        headers["X-Forwarded-For"] = conn.client[0]
        headers["X-Forwarded-Proto"] = "https"
        headers["X-Forwarded-Host"] = request.host
        for extra in admitted.app.spec.rewrite.headers:
            headers[extra.name] = extra.value
        headers[JWT_HEADER] = admitted.jwt
        return headers

    def _url(self, app: App, path: str, query: str) -> URL:
        return URL(app.spec.uri + path + (f"?{query}" if query else ""), encoded=True)

    def _ssl(self, app: App) -> ssl.SSLContext | bool:
        if app.spec.uri.startswith("https://") and app.spec.insecure_skip_verify:
            return self._insecure
        return True

    def _live(
        self, request: web.Request, who: _Who, label: str, conn: _Conn, kind: str
    ) -> LiveConnection:
        async def terminate(reason: str) -> None:
            if transport is not None:
                transport.abort()

        transport = request.transport
        return self._deps.registry.add(
            LiveConnection(
                kind="app",
                identity=who.identity,
                target=label,
                remote_addr=f"{conn.client[0]}:{conn.client[1]}",
                session_id=who.session_id,
                started=self._deps.clock.now(),
                terminate=terminate,
                extra={"request": kind},
            )
        )

    async def _forward(
        self, request: web.Request, admitted: _Admitted, who: _Who, conn: _Conn, path: str
    ) -> web.StreamResponse:
        assert self._client is not None
        start = time.monotonic()
        app = admitted.app
        label = app.metadata.name
        headers = self._headers(request, admitted, conn, _HOP)
        data = request.content if request.body_exists else None
        live = self._live(request, who, label, conn, "http")
        status, sent = 502, 0
        try:
            async with self._client.request(
                request.method,
                self._url(app, path, request.query_string),
                headers=headers,
                data=data,
                allow_redirects=False,
                ssl=self._ssl(app),
            ) as upstream:
                status = upstream.status
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name, value in upstream.headers.items():
                    if name.lower() not in _HOP:
                        response.headers.add(name, value)
                if upstream.content_length is not None and request.method != "HEAD":
                    response.content_length = upstream.content_length
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    sent += len(chunk)
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("app %s unreachable: %s", label, exc)
            return _text(502, f'app "{label}" is not reachable')
        finally:
            self._deps.registry.remove(live)
            await self._audit_request(request, who, label, path, status, sent, start)

    async def _audit_request(
        self,
        request: web.Request,
        who: _Who,
        label: str,
        path: str,
        status: int,
        sent: int,
        start: float,
    ) -> None:
        mode = self._deps.audit_requests
        if mode == "none" or (mode == "writes" and request.method in ("GET", "HEAD")):
            return
        await self._deps.audit.emit(
            "app.request",
            user=who.identity.user,
            app=label,
            method=request.method,
            path=path,
            status=status,
            bytes_in=request.content_length or 0,
            bytes_out=sent,
            duration_ms=round((time.monotonic() - start) * 1000, 1),
            session_id=who.session_id,
        )

    async def _websocket(
        self, request: web.Request, admitted: _Admitted, who: _Who, conn: _Conn, path: str
    ) -> web.StreamResponse:
        assert self._client is not None
        start = time.monotonic()
        app = admitted.app
        label = app.metadata.name
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p
        ]
        url = self._url(app, path, request.query_string)
        headers = self._headers(request, admitted, conn, _WS_SKIP)
        try:
            upstream = await self._client.ws_connect(
                url, headers=headers, protocols=protocols, ssl=self._ssl(app), autoping=True
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("app %s websocket refused: %s", label, exc)
            return _text(502, f'app "{label}" refused the WebSocket')
        down = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else ())
        await down.prepare(request)
        counts = [0, 0]

        async def terminate(reason: str) -> None:
            await asyncio.gather(
                down.close(
                    code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=reason[:120].encode()
                ),
                upstream.close(),
                return_exceptions=True,
            )

        live = self._deps.registry.add(
            LiveConnection(
                kind="app",
                identity=who.identity,
                target=label,
                remote_addr=f"{conn.client[0]}:{conn.client[1]}",
                session_id=who.session_id,
                started=self._deps.clock.now(),
                terminate=terminate,
                extra={"request": "websocket"},
            )
        )
        try:
            await _pump_ws(down, upstream, counts)
        finally:
            self._deps.registry.remove(live)
            await upstream.close()
            await down.close()
            await self._audit_ws(request, who, label, path, counts, start)
        return down

    async def _audit_ws(
        self,
        request: web.Request,
        who: _Who,
        label: str,
        path: str,
        counts: Sequence[int],
        start: float,
    ) -> None:
        if self._deps.audit_requests == "none":
            return
        await self._deps.audit.emit(
            "app.request",
            user=who.identity.user,
            app=label,
            method="GET",
            path=path,
            status=101,
            bytes_in=counts[0],
            bytes_out=counts[1],
            duration_ms=round((time.monotonic() - start) * 1000, 1),
            session_id=who.session_id,
            websocket=True,
        )


async def _pump_ws(
    down: web.WebSocketResponse, up: aiohttp.ClientWebSocketResponse, counts: list[int]
) -> None:
    async def to_app() -> None:
        async for msg in down:
            if msg.type == aiohttp.WSMsgType.TEXT:
                counts[0] += len(msg.data)
                await up.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                counts[0] += len(msg.data)
                await up.send_bytes(msg.data)
            else:
                break

    async def to_client() -> None:
        async for msg in up:
            if msg.type == aiohttp.WSMsgType.TEXT:
                counts[1] += len(msg.data)
                await down.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                counts[1] += len(msg.data)
                await down.send_bytes(msg.data)
            else:
                break

    tasks = [spawn(to_app(), "app-ws-up"), spawn(to_client(), "app-ws-down")]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _strip_cookie(value: str) -> str:
    """The ``Cookie`` header without our session cookie (the app never sees it)."""
    kept = [p for p in value.split(";") if p.strip().split("=", 1)[0].strip() != COOKIE]
    return ";".join(kept).strip()


def _no_store(response: web.StreamResponse) -> None:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"


def _text(status: int, message: str) -> web.Response:
    response = web.Response(status=status, text=message + "\n")
    _no_store(response)
    return response
