"""Active sessions in the browser (``/web/sessions``) and terminating one.

Layer: web (IO shell). The list is what ``bsh sessions ls`` shows
(:meth:`bastion.auth.sessions.SessionTrackerService.list`: the caller's own sessions and those
they may join, from the trackers the nodes report). Terminating is ``bsh sessions kill``'s
path, not a lock: the server joins the session as a **moderator** through the proxy's SSH route
(``bastion-ssh/1`` with a join line, mTLS with a certificate issued for this web session for a
minute, audited as every certificate issue) and sends the terminate frame; the node decides
(:func:`bastion.rbac.moderation.check_join`: only those whose roles let them moderate the
owner's sessions), ends the session and audits it. The button is shown only where the caller
may join as moderator; the node checks again. "Join as MODE" links open the join page
(:mod:`bastion.web.join`) in each mode the caller may join.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from datetime import timedelta
from typing import Final
from urllib.parse import quote

import structlog
from aiohttp import web

from bastion.auth.sessions import SessionTrackerService, VisibleSession
from bastion.errors import AccessDenied, BastionError, ConnectionProblem
from bastion.protocols.sessionjoin import FrameDecoder, encode_frame
from bastion.protocols.sshroute import encode_join_request
from bastion.types.identity import Identity
from bastion.web.admin_common import (
    ADMIN_SCRIPTS,
    PageContext,
    Shell,
    esc,
    guarded_page,
    hidden_csrf,
    notice,
)
from bastion.web.ssh_dial import dial_proxy, new_key, route_tls_context
from bastion.web.terminal import proxy_candidates

__all__ = ["KILL_TIMEOUT", "LivePages", "add_live_routes", "session_rows"]

log = structlog.get_logger("bastion.web.sessions")
KILL_TIMEOUT: Final = 15.0
CERT_TTL: Final = timedelta(minutes=1)


def session_rows(ctx: PageContext, seen: list[VisibleSession]) -> str:
    if not seen:
        return '<p class="empty">No live sessions you may see.</p>'
    rows = []
    for tracker, modes in seen:
        spec = tracker.spec
        started = f"{spec.started:%Y-%m-%d %H:%M:%S} UTC" if spec.started else "-"
        people = ", ".join(f"{p.user} ({p.mode})" for p in spec.participants)
        sid = quote(tracker.name, safe="")
        joins = "".join(
            f'<a class="button" href="/web/sessions/{esc(sid)}/join?mode={m}" '
            f'aria-label="Join session {esc(tracker.name)} as {m}">Join as {m}</a> '
            for m in modes
        )  # the join page (bastion.web.join), in the modes check_join allows
        action = joins or '<span class="muted">-</span>'
        if "moderator" in modes:
            action = joins + (
                f'<form method="post" action="/web/sessions/{esc(quote(tracker.name, safe=""))}'
                f'/terminate" data-confirm="Terminate {esc(spec.owner)}\'s session on '
                f'{esc(spec.node)}?">{hidden_csrf(ctx)}<button type="submit" class="danger" '
                f'aria-label="Terminate session {esc(tracker.name)}">Terminate</button></form>'
            )
        rows.append(
            f'<tr data-session="{esc(tracker.name)}"><th scope="row">{esc(spec.owner)}</th>'
            f"<td>{esc(spec.login)}@{esc(spec.node)}</td><td>{esc(spec.command or spec.kind)}</td>"
            f"<td>{esc(started)}</td><td>{esc(spec.state)}</td><td>{esc(people)}</td>"
            f"<td>{action}</td></tr>"
        )
    return (
        '<table class="nodes" id="sessions"><thead><tr><th scope="col">Who</th>'
        '<th scope="col">Where</th><th scope="col">Command</th><th scope="col">Since</th>'
        '<th scope="col">State</th><th scope="col">Participants</th><th scope="col">Actions'
        "</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


class _Join(asyncio.Protocol):
    """The reply line, then session-join frames until the end frame."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.reply: asyncio.Future[bytes] = loop.create_future()
        self.done: asyncio.Future[str] = loop.create_future()
        self.decoder = FrameDecoder()
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        if not self.reply.done():
            self.buf += data
            line, sep, rest = self.buf.partition(b"\n")
            if not sep:
                return
            self.reply.set_result(line)
            data = rest
        with contextlib.suppress(BastionError):
            for frame in self.decoder.feed(data):
                if frame.type == "e" and not self.done.done():
                    self.done.set_result(frame.payload.decode(errors="replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(ConnectionProblem("the proxy closed the connection"))
        if not self.done.done():
            self.done.set_result("the session ended")


class LivePages:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.trackers = SessionTrackerService(shell.auth)

    async def show(self, ctx: PageContext, top: str = "") -> web.StreamResponse:
        seen = await self.trackers.list(ctx.session.identity)
        return ctx.page("Active sessions", top + session_rows(ctx, seen), scripts=ADMIN_SCRIPTS)

    async def terminate(self, ctx: PageContext) -> web.StreamResponse:
        await ctx.form()  # CSRF
        session_id = ctx.request.match_info["session_id"]
        tracker, modes = await self.trackers.get(ctx.session.identity, session_id)
        if "moderator" not in modes:
            raise AccessDenied("you may not terminate this session (moderators only)")
        node = tracker.spec.host_id or tracker.spec.node
        reason = await self._kill(ctx.session.identity, node, session_id, ctx)
        log.info("web session terminate", user=ctx.user, session=session_id, reason=reason)
        return await self.show(ctx, notice(f"Session {session_id}: {reason or 'terminated'}"))

    async def _kill(self, identity: Identity, node: str, session_id: str, ctx: PageContext) -> str:
        tls = await self.tls(identity, ctx.remote)
        addrs = proxy_candidates(ctx.request.host, await self.proxies())
        request = encode_join_request(node, session_id, "moderator")
        transport, proto = await dial_proxy(
            addrs, tls, _Join, request, what="terminate the session", per_proxy=KILL_TIMEOUT
        )
        try:
            async with asyncio.timeout(KILL_TIMEOUT):
                transport.write(encode_frame("t"))
                return await proto.done
        finally:
            transport.close()

    async def tls(self, identity: Identity, remote: str) -> ssl.SSLContext:
        """A TLS client context with a fresh key certified for this web session (a minute)."""
        auth = self.shell.auth
        key = new_key()
        expires = min(identity.expires, auth.clock.now() + CERT_TTL)
        certs = await auth.issuer.issue_user(
            identity.model_copy(update={"logins": (), "expires": expires}), key.public, remote
        )
        return route_tls_context(certs.tls_cert, key.private_pem, certs.tls_host_ca)

    async def proxies(self) -> list[str]:
        auth = self.shell.auth
        out = [p.spec.public_addr for p in await auth.proxies.list() if p.spec.public_addr]
        own = auth.deps.public_url.removeprefix("https://")
        for origin in auth.deps.webauthn_origins:
            addr = origin.removeprefix("https://")
            if addr != own and addr not in out:
                out.append(addr)
        return out


def add_live_routes(app: web.Application, shell: Shell) -> None:
    pages = LivePages(shell)
    app.router.add_get("/web/sessions", guarded_page(shell, pages.show))
    app.router.add_post(
        "/web/sessions/{session_id}/terminate", guarded_page(shell, pages.terminate)
    )
