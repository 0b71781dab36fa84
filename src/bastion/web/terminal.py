"""The web SSH terminal: xterm.js in the page, a WebSocket to the proxy, SSH from the server.

Layer: web (IO shell). Routes:

* ``GET /web/ssh?node=N&login=L``: the terminal page (xterm.js and ``static/terminal.js``):
  terminals in tabs (each its own WebSocket and SSH session), and SFTP upload/download to the
  node's home directory (:mod:`bastion.web.sftp`).
* ``GET /web/ssh/ws?node=N&login=L&cols=C&rows=R[&resume=ID]``: the WebSocket. Binary frames
  carry the terminal's bytes both ways; text frames are JSON control messages: from the browser
  ``{"type": "resize", "cols", "rows"}``, ``{"type": "mfa", "credential"}`` and
  ``{"type": "bye"}`` (the tab was closed on purpose); from the server ``{"type": "mfa",
  "options"}`` (per-session MFA: sign this challenge), ``{"type": "ready", "id", ...}``,
  ``{"type": "error"|"closed", "message"}``.
* ``GET /web/vendor/NAME``: xterm.js and its fit addon, served from the npm install
  (``src/bastion/web/assets/node_modules``, built by ``make web-assets``; never committed).

The server acts as ``bsh ssh`` would for the browser's session: it asks the same question as
``bsh ssh`` before dialing (:meth:`bastion.auth.session_certs.SessionCerts.challenge`: RBAC with
the browser's address, locks, node online, whether per-session MFA applies), makes a fresh key
pair in memory for this one terminal and has it certified for the session's identity narrowed
to this login (for a minute, never past the web session). When the node and login require
per-session MFA, the page runs the WebAuthn ceremony for the scope ``session:<node>:<login>``
(the challenge the CLI gets) and the certificate is the one ``bsh ssh`` would get
(:meth:`SessionCerts.issue`: verified, audited as ``mfa.session``). The SSH session runs through
the proxy's own SSH route (:mod:`bastion.web.ssh_dial`), so RBAC, locks, recording and audit are
exactly those of ``bsh ssh``. A lock ends the session and the page shows the lock's message.

Reconnect: a WebSocket that drops without the session ending leaves the SSH session held for
:data:`bastion.web.held.GRACE` seconds; the page reconnects with ``resume=<terminal id>`` (bound
to this web session) and gets the output it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import asyncssh
import structlog
from aiohttp import WSMsgType, web

from bastion.auth.guarded import GuardedAuth
from bastion.auth.issuer import UserCerts
from bastion.auth.server import AuthServer
from bastion.auth.session_certs import SessionCerts
from bastion.auth.users import UserService
from bastion.errors import AccessDenied, BadParameter, BastionError, ConnectionProblem
from bastion.locks.matcher import identity_targets
from bastion.protocols.sshroute import PREFERRED_CIPHERS
from bastion.services.credentials import new_secret
from bastion.types.identity import Identity
from bastion.web.admin_common import Shell, hidden_csrf
from bastion.web.held import GRACE, HeldTerminal, HeldTerminals, owner_key
from bastion.web.security import security_headers
from bastion.web.sessions import SESSION_COOKIE, WebSession, current_session
from bastion.web.sftp import MAX_UPLOAD, WebFiles
from bastion.web.ssh_dial import DIAL_TIMEOUT, Route, credentials, new_key, proxy_candidates

__all__ = [
    "MFA_TIMEOUT",
    "VENDOR",
    "WEB_CERT_TTL",
    "TerminalPages",
    "accept_websocket",
    "add_terminal_routes",
    "check_origin",
    "parse_size",
    "proxy_candidates",
    "vendor_root",
]

log = structlog.get_logger("bastion.web.terminal")

WEB_CERT_TTL: Final = timedelta(minutes=1)
"""How long a web terminal's certificate is valid: it is used once, to open the session."""
MFA_TIMEOUT: Final = 120.0
"""How long the page has to answer the per-session MFA challenge (the security key touch)."""
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


async def accept_websocket(
    request: web.Request, what: str
) -> tuple[WebSession, web.WebSocketResponse]:
    """The signed-in web session and the prepared WebSocket of a browser page's upgrade
    request (``what``: the page, for the log).

    Raises:
        HTTPUnauthorized: not signed in.
        HTTPForbidden: the ``Origin`` is not this proxy's (cross-site WebSocket hijacking).
    """
    session = current_session(request)
    if session is None:
        raise web.HTTPUnauthorized(text="sign in first")
    try:
        check_origin(request.headers.get("Origin"), request.host)
    except AccessDenied as exc:
        log.info(f"{what} refused", reason=exc.message, origin=request.headers.get("Origin"))
        raise web.HTTPForbidden(text=exc.message) from None
    # No permessage-deflate: typed secrets and node output would share a compression context
    # (a CRIME-style leak), and it costs CPU for nothing on a LAN.
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME, compress=False)
    await ws.prepare(request)
    return session, ws


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


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


class TerminalPages:
    def __init__(self, auth: AuthServer, users: UserService, grace: float = GRACE) -> None:
        self.auth = auth
        self.users = users
        self.shell = Shell(auth, users)
        self.session_certs = SessionCerts(auth, auth.mfa)
        self.held = HeldTerminals(grace)
        self.files = WebFiles(self.held)

    # ---- pages ---------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        ctx = await self.shell.context(request)
        if ctx is None:
            raise web.HTTPSeeOther("/web/login")
        node = request.query.get("node", "")[:253]
        login = request.query.get("login", "")[:64]
        nonce = new_secret(18)
        body = (
            '<div class="term-bar"><div id="term-tabs" role="tablist" aria-label="Terminals">'
            '</div><button type="button" id="new-tab">New terminal</button></div>'
            '<p id="term-status" role="status" class="muted">Connecting…</p>'
            f'<div id="terminals" data-node="{_esc(node)}" data-login="{_esc(login)}" '
            f'data-style-nonce="{nonce}"></div>'
            '<details class="files"><summary>Files in the home directory (SFTP)</summary>'
            '<form id="upload" method="post" enctype="multipart/form-data" '
            'action="/web/ssh/files">'
            f"{hidden_csrf(ctx)}"
            '<input type="hidden" name="term" value="">'
            '<label for="upload-file">Upload a file</label> '
            '<input type="file" id="upload-file" name="file" required> '
            '<button type="submit">Upload</button></form>'
            '<form id="download" method="get" action="/web/ssh/files">'
            '<input type="hidden" name="term" value="">'
            '<label for="download-name">Download a file</label> '
            '<input type="text" id="download-name" name="name" required '
            'placeholder="file name in the home directory"> '
            '<button type="submit">Download</button></form>'
            f'<p class="muted">Up to {MAX_UPLOAD // (1024 * 1024)} MiB, through the active '
            "tab's SSH session (audited on the node like sftp).</p>"
            '<p id="files-status" role="status"></p></details>'
        )
        return ctx.page(
            f"{login}@{node}",
            body,
            styles=("/web/vendor/xterm.css", "/web/static/web.css", "/web/static/admin.css"),
            scripts=(
                "/web/vendor/xterm.js",
                "/web/vendor/addon-fit.js",
                "/web/static/webauthn-codec.js",
                "/web/static/style-nonce.js",
                "/web/static/terminal.js",
            ),
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
                text="The web UI's libraries are not installed on the server: run make "
                "web-assets (npm ci in src/bastion/web/assets).",
            )
            security_headers(response)
            return response
        response = web.Response(body=data, content_type=_TYPES[Path(name).suffix])
        security_headers(response)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    # ---- the WebSocket -------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        session, ws = await accept_websocket(request, "web terminal")
        owner = owner_key(request.cookies.get(SESSION_COOKIE, ""))
        resume = request.query.get("resume", "")
        try:
            if resume:
                held = self.held.find(resume, owner)
                if held is None or held.ended.is_set():
                    raise ConnectionProblem(
                        "that terminal's session has ended (it is kept for "
                        f"{int(self.held.grace)} s after a disconnection): open a new one"
                    )
            else:
                held = await self._open(ws, session, request, owner)
        except BastionError as exc:
            await _final(ws, "error", exc.message)
            return ws
        except Exception:
            log.exception("web terminal failed to open", node=request.query.get("node", ""))
            await _final(ws, "error", "the session could not be opened")
            return ws
        try:
            await ws.send_json(
                {"type": "ready", "id": held.id, "node": held.node, "login": held.login,
                 "resumed": bool(resume)}
            )  # fmt: skip
        except (ConnectionError, RuntimeError):  # the page went away meanwhile
            if not resume:
                held.end("the browser went away before the session opened")
            return ws
        await held.attach(ws)
        why = await self._serve(ws, session, held)
        if why is None:  # the WebSocket dropped: hold the session for a reconnect
            self.held.release(held, ws)
            log.info("web terminal detached", user=session.user, node=held.node)
            return ws
        held.end(why)
        locked = await self._lock_message(session.identity, held.node, held.login)
        await _final(ws, "closed", locked or held.reason)
        log.info("web terminal ended", user=session.user, node=held.node, login=held.login)
        return ws

    async def _serve(
        self, ws: web.WebSocketResponse, session: WebSession, held: HeldTerminal
    ) -> str | None:
        """Pump the browser's input until the session ends (its reason), the page says bye or
        the web session expires; None when the WebSocket dropped (the session is held)."""
        process: asyncssh.SSHClientProcess[bytes] = held.process
        bye = False

        async def browser() -> None:
            nonlocal bye
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    process.stdin.write(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    if _control(process, msg.data) == "bye":
                        bye = True
                        return
                elif msg.type == WSMsgType.ERROR:
                    return

        remaining = (session.expires - self.auth.clock.now()).total_seconds()
        reader = asyncio.ensure_future(browser())
        ended = asyncio.ensure_future(held.ended.wait())
        expiry = asyncio.ensure_future(asyncio.sleep(max(0.0, remaining)))
        try:
            await asyncio.wait({reader, ended, expiry}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, ended, expiry):
                task.cancel()
        if held.ended.is_set():
            return held.reason
        if expiry.done() and not expiry.cancelled():
            return "your web session expired"
        if bye:
            return "the browser closed the terminal"
        return None

    async def _open(
        self, ws: web.WebSocketResponse, session: WebSession, request: web.Request, owner: str
    ) -> HeldTerminal:
        identity = session.identity
        remote = request.remote or ""
        node = request.query.get("node", "")
        login = request.query.get("login", "")
        cols, rows = parse_size(request.query.get("cols", ""), request.query.get("rows", ""))
        if not node or not login:
            raise BadParameter("choose a node and a login on the resources page")
        guard = await GuardedAuth.for_identity(self.auth, self.users, identity, remote)
        role_set = guard.ctx.role_set
        # The question bsh ssh asks first: RBAC with the browser's address, locks, online, MFA.
        answer = await self.session_certs.challenge(identity, role_set, node, login, remote)
        target = str(answer["node"])
        key = new_key()
        certs: UserCerts
        if answer.get("mfa_required"):
            await ws.send_json(
                {"type": "mfa", "options": answer["challenge"], "node": target, "login": login}
            )
            credential = await _mfa_answer(ws)
            certs = await self.session_certs.issue(
                identity, role_set, target, login, key.public, credential, remote
            )
        else:
            expires = min(identity.expires, self.auth.clock.now() + WEB_CERT_TTL)
            narrowed = identity.model_copy(update={"logins": (login,), "expires": expires})
            certs = await self.auth.issuer.issue_user(narrowed, key.public, remote)
        creds = credentials(key, certs)
        addrs = proxy_candidates(request.host, await self._proxies())
        if not addrs:
            raise ConnectionProblem("no proxy address is known to open the session through")
        try:
            conn = await asyncssh.connect(
                target,
                22,
                tunnel=Route(addrs, creds.tls, target, login),
                config=[],
                username=login,
                client_keys=[(creds.key, creds.cert)],
                known_hosts=([], creds.host_ca, []),
                agent_path=None,
                encryption_algs=PREFERRED_CIPHERS,
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
        held = HeldTerminal(
            owner,
            target,
            login,
            (process.stdout, process.stderr),
            close=conn.close,
            exit_status=lambda: process.exit_status,
        )
        held.process, held.conn = process, conn
        self.held.add(held)
        return held

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


async def _final(ws: web.WebSocketResponse, kind: str, message: str) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_json({"type": kind, "message": message})
        await ws.close()


async def _mfa_answer(ws: web.WebSocketResponse) -> dict[str, Any]:
    """The page's signed per-session MFA challenge (other messages meanwhile are ignored).

    Raises:
        AccessDenied: the page went away, gave up, or took longer than :data:`MFA_TIMEOUT`.
    """
    try:
        async with asyncio.timeout(MFA_TIMEOUT):
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                with contextlib.suppress(ValueError):
                    data = json.loads(msg.data)
                    if isinstance(data, dict) and data.get("type") == "mfa":
                        credential = data.get("credential")
                        if not isinstance(credential, dict):
                            raise AccessDenied(
                                "the security key was not used (the prompt was cancelled or "
                                "timed out): reconnect to try again"
                            )
                        return credential
    except TimeoutError:
        raise AccessDenied("the security key was not touched in time: reconnect") from None
    raise AccessDenied("the page closed before the security key was used")


def _control(process: asyncssh.SSHClientProcess[bytes], text: str) -> str:
    """A JSON control message from the page: ``resize`` is applied; returns the type."""
    try:
        msg = json.loads(text)
    except ValueError:
        return ""
    if not isinstance(msg, dict):
        return ""
    kind = str(msg.get("type", ""))
    if kind == "resize":
        try:
            cols, rows = parse_size(str(msg.get("cols", "")), str(msg.get("rows", "")))
        except BadParameter:
            return kind
        process.change_terminal_size(cols, rows)
    return kind


def add_terminal_routes(app: web.Application, auth: AuthServer, users: UserService) -> None:
    pages = TerminalPages(auth, users)
    app.router.add_get("/web/ssh", pages.page)
    app.router.add_get("/web/ssh/ws", pages.websocket)
    app.router.add_get("/web/ssh/files", pages.files.download)
    app.router.add_post("/web/ssh/files", pages.files.upload)
    app.router.add_get("/web/vendor/{name}", pages.vendor)
