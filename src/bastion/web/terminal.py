"""The web SSH terminal: xterm.js in the page, a WebSocket to the proxy, SSH from the server.

Layer: web (IO shell). Routes:

* ``GET /web/ssh?node=N&login=L``: the terminal page (xterm.js and ``static/terminal.js``).
* ``GET /web/ssh/ws?node=N&login=L&cols=C&rows=R``: the WebSocket. Binary frames carry the
  terminal's bytes both ways; text frames are JSON control messages: from the browser
  ``{"type": "resize", "cols", "rows"}``; from the server ``{"type": "ready"|"error"|"closed",
  "message"}``.
* ``GET /web/vendor/NAME``: xterm.js and its fit addon, served from the npm install
  (``src/bastion/web/assets/node_modules``, built by ``make``; never committed).

The server acts as ``bsh ssh`` would for the browser's session: it asks the same question as
``bsh ssh`` before dialing (:meth:`bastion.auth.session_certs.SessionCerts.challenge`: RBAC with
the browser's address, locks, node online), makes a fresh key pair in memory for this one
terminal, has it certified for the session's identity narrowed to this login (for a minute,
never past the web session), and opens the SSH route through the proxy's own port
(``bastion-ssh/1``, mTLS). So the proxy's RBAC, locks and live registry, the node's checks,
recording and audit are exactly those of ``bsh ssh``. The private key never leaves this
process and is dropped with the connection. A lock ends the session on the node and at the
proxy (its message is written to the terminal) and the page shows the lock's message.

Per-session MFA is not asked for in the browser yet: such a target is refused with a message
that says to use ``bsh ssh``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import asyncssh
import structlog
from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.auth.guarded import GuardedAuth
from bastion.auth.server import AuthServer
from bastion.auth.session_certs import SessionCerts
from bastion.auth.users import UserService
from bastion.errors import (
    AccessDenied,
    BadParameter,
    BastionError,
    ConnectionProblem,
    error_from_code,
)
from bastion.locks.matcher import identity_targets
from bastion.protocols.alpn import ALPN_SSH
from bastion.protocols.sshroute import encode_request
from bastion.services.credentials import new_secret
from bastion.types.identity import Identity
from bastion.web.pages import Raw
from bastion.web.security import security_headers
from bastion.web.sessions import WebSession, current_session
from bastion.web.ui import app_page

__all__ = [
    "VENDOR",
    "WEB_CERT_TTL",
    "TerminalPages",
    "add_terminal_routes",
    "check_origin",
    "parse_size",
    "proxy_candidates",
    "vendor_root",
]

log = structlog.get_logger("bastion.web.terminal")

WEB_CERT_TTL: Final = timedelta(minutes=1)
"""How long a web terminal's certificate is valid: it is used once, to open the session."""
DIAL_TIMEOUT: Final = 15.0
MAX_FRAME: Final = 64 * 1024
VENDOR: Final = {
    "xterm.js": "@xterm/xterm/lib/xterm.js",
    "xterm.css": "@xterm/xterm/css/xterm.css",
    "addon-fit.js": "@xterm/addon-fit/lib/addon-fit.js",
}
"""``/web/vendor/NAME`` → the file in node_modules (package.json + package-lock.json beside)."""
_TYPES = {".js": "text/javascript", ".css": "text/css"}


def vendor_root() -> Path:
    """Where ``npm ci`` put the browser libraries (``BASTION_WEB_ASSETS`` overrides)."""
    override = os.environ.get("BASTION_WEB_ASSETS")
    if override:
        return Path(override)
    return Path(__file__).parent / "assets" / "node_modules"


def check_origin(origin: str | None, host: str) -> None:
    """A WebSocket must come from a page of this very origin (the cookie alone would let any
    site open one: browsers send cookies with cross-site WebSocket handshakes).

    Raises:
        AccessDenied: no Origin, or another one.
    """
    if not origin or origin != f"https://{host}":
        raise AccessDenied("the terminal's WebSocket must come from this site's own pages")


def parse_size(cols: str, rows: str) -> tuple[int, int]:
    """Terminal size from the query (defaults 80x24, bounded).

    Raises:
        BadParameter: not numbers.
    """
    try:
        c, r = int(cols or 80), int(rows or 24)
    except ValueError:
        raise BadParameter("cols and rows must be numbers") from None
    return max(10, min(c, 1000)), max(2, min(r, 500))


def proxy_candidates(request_host: str, known: list[str]) -> list[str]:
    """The proxy addresses to dial, in order: the one the browser reached when it is a known
    proxy (a Host header alone never chooses what the server connects to), then the others."""
    ordered = [request_host] if request_host in known else []
    return ordered + [a for a in known if a not in ordered]


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class _Creds:
    key: asyncssh.SSHKey
    cert: asyncssh.SSHCertificate
    host_ca: list[asyncssh.SSHKey]
    tls: ssl.SSLContext


class _RouteReply(asyncio.Protocol):
    """Reads the proxy's one-line reply, then hands the TLS transport to asyncssh."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.rest = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.reply.done():
            self.rest += data
            return
        self.rest += data
        line, sep, after = self.rest.partition(b"\n")
        if sep:
            self.rest = after
            self.reply.set_result(line)
            assert self.transport is not None
            self.transport.pause_reading()
        elif len(self.rest) > 16 * 1024:
            self.reply.set_exception(ConnectionProblem("the proxy's reply is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(
                ConnectionProblem(f"the proxy closed the connection ({exc or 'no reason'})")
            )


def _check_reply(line: bytes) -> None:
    try:
        reply = json.loads(line)
    except ValueError:
        raise ConnectionProblem("the proxy did not answer the SSH route request") from None
    if not isinstance(reply, dict) or reply.get("ok") is not True:
        error = reply.get("error") if isinstance(reply, dict) else None
        code = reply.get("code") if isinstance(reply, dict) else None
        message = str(error or "the proxy refused the connection")
        raise error_from_code(str(code), message) if code else AccessDenied(message)


class _Route:
    """asyncssh ``tunnel=``: the SSH connection runs over the proxy's ``bastion-ssh/1``."""

    def __init__(self, addrs: list[str], tls: ssl.SSLContext, node: str, login: str) -> None:
        self.addrs, self.tls, self.node, self.login = addrs, tls, node, login

    async def create_connection(
        self, session_factory: Any, host: str, port: int
    ) -> tuple[asyncio.Transport, Any]:
        loop = asyncio.get_running_loop()
        failure: BaseException | None = None
        for addr in self.addrs:
            proxy_host, proxy_port = _split(addr)
            try:
                async with asyncio.timeout(DIAL_TIMEOUT):
                    transport, reader = await loop.create_connection(
                        _RouteReply, proxy_host, proxy_port, ssl=self.tls,
                        server_hostname=proxy_host,
                    )  # fmt: skip
                    assert isinstance(transport, asyncio.Transport)
                    transport.write(encode_request(self.node, self.login, port))
                    line = await reader.reply
            except (OSError, TimeoutError) as exc:
                failure = exc
                continue
            try:
                _check_reply(line)
            except BastionError:
                transport.abort()
                raise
            protocol = session_factory()
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            if reader.rest:
                protocol.data_received(reader.rest)
            transport.resume_reading()
            return transport, protocol
        raise ConnectionProblem(f"cannot reach a proxy to open the session ({failure})")


def _tls_context(certs_pem: str, key_pem: bytes, ca_pem: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="bastion-web-") as tmp:  # 0700; gone at once
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_file.write_text(certs_pem)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key_pem)
        ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols([ALPN_SSH])
    return ctx


class TerminalPages:
    def __init__(self, auth: AuthServer, users: UserService) -> None:
        self.auth = auth
        self.users = users
        self.session_certs = SessionCerts(auth, auth.mfa)

    # ---- pages ---------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        session = current_session(request)
        if session is None:
            raise web.HTTPSeeOther("/web/login")
        node = request.query.get("node", "")[:253]
        login = request.query.get("login", "")[:64]
        nonce = new_secret(18)
        body = Raw(
            '<nav class="top"><a href="/web/nodes">Resources</a> '
            f"<span><strong>{_esc(login)}@{_esc(node)}</strong></span></nav>"
            f'<p id="term-status" role="status" class="muted">Connecting…</p>'
            f'<div id="terminal" tabindex="0" aria-label="Terminal" data-node="{_esc(node)}" '
            f'data-login="{_esc(login)}" data-style-nonce="{nonce}"></div>'
        )
        return app_page(
            f"{login}@{node}",
            body,
            styles=("/web/vendor/xterm.css", "/web/static/web.css"),
            scripts=("/web/vendor/xterm.js", "/web/vendor/addon-fit.js", "/web/static/terminal.js"),
            style_nonce=nonce,
        )

    async def vendor(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        relative = VENDOR.get(name)
        if relative is None:
            raise web.HTTPNotFound()
        path = vendor_root() / relative
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError:
            log.error("web assets are not installed", path=str(path))
            response = web.Response(
                status=503,
                text="The web UI's libraries are not installed on the server: run make install "
                "(npm ci in src/bastion/web/assets).",
            )
            security_headers(response)
            return response
        response = web.Response(body=data, content_type=_TYPES[Path(name).suffix])
        security_headers(response)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    # ---- the WebSocket -------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        session = current_session(request)
        if session is None:
            raise web.HTTPUnauthorized(text="sign in first")
        try:
            check_origin(request.headers.get("Origin"), request.host)
        except AccessDenied as exc:
            log.info(
                "web terminal refused", reason=exc.message, origin=request.headers.get("Origin")
            )
            raise web.HTTPForbidden(text=exc.message) from None
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME)
        await ws.prepare(request)
        node = request.query.get("node", "")
        login = request.query.get("login", "")
        remote = request.remote or ""
        try:
            cols, rows = parse_size(request.query.get("cols", ""), request.query.get("rows", ""))
            conn, process, target = await self._open(session, request, node, login, cols, rows)
        except BastionError as exc:
            await ws.send_json({"type": "error", "message": exc.message})
            await ws.close()
            return ws
        except Exception:
            log.exception("web terminal failed to open", node=node, login=login)
            await ws.send_json({"type": "error", "message": "the session could not be opened"})
            await ws.close()
            return ws
        await ws.send_json({"type": "ready", "node": target, "login": login})
        message = await self._run(ws, session, conn, process)
        locked = await self._lock_message(session.identity, target, login)
        await ws.send_json({"type": "closed", "message": locked or message})
        await ws.close()
        log.info("web terminal ended", user=session.user, node=target, login=login, remote=remote)
        return ws

    async def _open(
        self,
        session: WebSession,
        request: web.Request,
        node: str,
        login: str,
        cols: int,
        rows: int,
    ) -> tuple[asyncssh.SSHClientConnection, asyncssh.SSHClientProcess[bytes], str]:
        identity = session.identity
        remote = request.remote or ""
        if not node or not login:
            raise BadParameter("choose a node and a login on the resources page")
        guard = await GuardedAuth.for_identity(self.auth, self.users, identity, remote)
        # The question bsh ssh asks first: RBAC with the browser's address, locks, online.
        answer = await self.session_certs.challenge(
            identity, guard.ctx.role_set, node, login, remote
        )
        target = str(answer["node"])
        if answer.get("mfa_required"):
            await self.auth.audit.emit(
                "access.denied",
                outcome="failure",
                user=identity.user,
                login=login,
                target=target,
                remote_addr=remote,
                verb="ssh",
                reason="per-session MFA required; the web terminal cannot ask for it yet",
            )
            raise AccessDenied(
                f"{login}@{target} requires per-session MFA (a security key touch), which the "
                f"web terminal cannot ask for yet: use bsh ssh {login}@{target}"
            )
        creds = await self._credentials(identity, login, remote)
        addrs = proxy_candidates(request.host, await self._proxies())
        if not addrs:
            raise ConnectionProblem("no proxy address is known to open the session through")
        try:
            conn = await asyncssh.connect(
                target,
                22,
                tunnel=_Route(addrs, creds.tls, target, login),
                config=[],
                username=login,
                client_keys=[(creds.key, creds.cert)],
                known_hosts=([], creds.host_ca, []),
                agent_path=None,
                login_timeout=DIAL_TIMEOUT,
                keepalive_interval=30,
            )
            process = await conn.create_process(
                term_type="xterm-256color", term_size=(cols, rows), encoding=None
            )
        except BastionError:
            raise
        except asyncssh.PermissionDenied:
            raise AccessDenied(f"the node {target} refused login {login!r}") from None
        except (asyncssh.Error, OSError) as exc:
            raise ConnectionProblem(f"the connection to {target} failed: {exc}") from None
        return conn, process, target

    async def _credentials(self, identity: Identity, login: str, remote: str) -> _Creds:
        """A key pair made here for this terminal only, certified for this login, for a minute
        (never past the web session)."""
        private = ed25519.Ed25519PrivateKey.generate()
        key_pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = (
            private.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        expires = min(identity.expires, self.auth.clock.now() + WEB_CERT_TTL)
        narrowed = identity.model_copy(update={"logins": (login,), "expires": expires})
        certs = await self.auth.issuer.issue_user(narrowed, public, remote)
        if not certs.ssh_cert:
            raise AccessDenied("your roles allow no login, so there is nothing to certify")
        return _Creds(
            key=asyncssh.import_private_key(key_pem),
            cert=asyncssh.import_certificate(certs.ssh_cert),
            host_ca=[asyncssh.import_public_key(k) for k in certs.ssh_host_ca],
            tls=_tls_context(certs.tls_cert, key_pem, certs.tls_host_ca),
        )

    async def _proxies(self) -> list[str]:
        """Proxy addresses: those advertised by proxies in their own process, then the
        configured public addresses (the all-in-one's proxy), never auth's own."""
        out = [p.spec.public_addr for p in await self.auth.proxies.list() if p.spec.public_addr]
        own = self.auth.deps.public_url.removeprefix("https://")
        for origin in self.auth.deps.webauthn_origins:
            addr = origin.removeprefix("https://")
            if addr != own and addr not in out:
                out.append(addr)
        return out

    async def _run(
        self,
        ws: web.WebSocketResponse,
        session: WebSession,
        conn: asyncssh.SSHClientConnection,
        process: asyncssh.SSHClientProcess[bytes],
    ) -> str:
        """Pump until either side ends; returns why it ended (for the page)."""

        async def output(reader: asyncssh.SSHReader[bytes]) -> None:
            while True:
                data = await reader.read(MAX_FRAME)
                if not data:
                    return
                await ws.send_bytes(data)

        async def browser() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    process.stdin.write(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    _control(process, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    return

        remaining = (session.expires - self.auth.clock.now()).total_seconds()
        tasks = {
            asyncio.ensure_future(output(process.stdout)): "the session ended",
            asyncio.ensure_future(output(process.stderr)): "",
            asyncio.ensure_future(browser()): "the browser closed the terminal",
            asyncio.ensure_future(asyncio.sleep(max(0.0, remaining))): "your web session expired",
        }
        why = "the session ended"
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                reasons = [tasks[t] for t in done if tasks[t]]
                if reasons:
                    why = reasons[0]
                    break
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                # the last output (a lock's notice on stderr) may still be in flight
                async with asyncio.timeout(0.5):
                    rest = await process.stderr.read(MAX_FRAME)
                    if rest and not ws.closed:
                        await ws.send_bytes(rest)
            conn.close()
        status = process.exit_status
        if why == "the session ended" and status is not None:
            why = f"the session ended (exit status {status})"
        return why

    async def _lock_message(self, identity: Identity, node: str, login: str) -> str:
        """The lock's message when a lock now covers this user, login or node."""
        targets = identity_targets(identity, login=login, nodes=(node,))
        decision = await self.auth.lock_access(identity, targets)
        if decision.allowed:
            return ""
        try:
            decision.raise_if_denied()
        except BastionError as exc:
            return exc.message
        return "locked"


def _control(process: asyncssh.SSHClientProcess[bytes], text: str) -> None:
    """A JSON control message from the page (only ``resize``; anything else is ignored)."""
    try:
        msg = json.loads(text)
    except ValueError:
        return
    if isinstance(msg, dict) and msg.get("type") == "resize":
        try:
            cols, rows = parse_size(str(msg.get("cols", "")), str(msg.get("rows", "")))
        except BadParameter:
            return
        process.change_terminal_size(cols, rows)


def _esc(value: str) -> str:
    import html

    return html.escape(value, quote=True)


def add_terminal_routes(app: web.Application, auth: AuthServer, users: UserService) -> None:
    pages = TerminalPages(auth, users)
    app.router.add_get("/web/ssh", pages.page)
    app.router.add_get("/web/ssh/ws", pages.websocket)
    app.router.add_get("/web/vendor/{name}", pages.vendor)
