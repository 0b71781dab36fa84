"""Joining a live session in the browser: the web UI's ``bsh join``.

Layer: web (IO shell). Routes:

* ``GET /web/sessions/{id}/join?mode=observer|moderator|peer``: an xterm.js page
  (``static/join.js``) with the session's output; peers type; moderators have a Terminate
  button. Shown only in a mode the caller may join in (the list's rule,
  :meth:`bastion.auth.sessions.SessionTrackerService.get`); the node decides again.
* ``GET /web/sessions/{id}/join/ws?mode=M``: the WebSocket (same-origin only, like the
  terminal's, :func:`bastion.web.terminal.check_origin`). The server opens the join exactly as
  ``bsh join`` does: the proxy's ``bastion-ssh/1`` route with a join line
  (:func:`bastion.protocols.sshroute.encode_join_request`), mTLS with a certificate issued for
  this web session for a minute (:meth:`bastion.web.admin_live.LivePages.tls`), then the frames
  of :mod:`bastion.protocols.sessionjoin`. Server → page: binary frames are the session's
  output (``o``); text frames are JSON ``{"type": "ready"|"notice"|"closed"|"error",
  "message"}`` (``n`` and ``e`` frames, refusals). Page → server: binary frames are keystrokes
  (relayed as ``i`` only for peers; the node drops others' anyway), ``{"type": "terminate"}``
  (``t``, moderators) and ``{"type": "bye"}``. The node audits ``session.join`` and
  ``session.leave``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Final

import structlog
from aiohttp import WSMsgType, web

from bastion.errors import AccessDenied, BadParameter, BastionError, ConnectionProblem
from bastion.protocols.sessionjoin import Frame, FrameDecoder, FrameType, encode_frame
from bastion.protocols.sshroute import encode_join_request
from bastion.runtime import as_transport
from bastion.services.credentials import new_secret
from bastion.types.sessions import JOIN_MODES, JoinMode
from bastion.web.admin_common import PageContext, Shell, esc, guarded_page
from bastion.web.admin_live import LivePages
from bastion.web.sessions import WebSession
from bastion.web.ssh_dial import dial_proxy
from bastion.web.terminal import accept_websocket, proxy_candidates

__all__ = ["JoinPages", "add_join_routes", "parse_mode", "ws_message"]

log = structlog.get_logger("bastion.web.join")
_PAUSE_AT: Final = 256
"""Frames queued for the browser before the proxy connection stops being read."""


def parse_mode(value: str) -> JoinMode:
    """The join mode from the query (observer when absent).

    Raises:
        BadParameter: not observer, moderator or peer.
    """
    mode = value or "observer"
    if mode not in JOIN_MODES:
        raise BadParameter(f"mode must be one of {', '.join(JOIN_MODES)}, not {mode[:32]!r}")
    return mode


def ws_message(frame: Frame) -> dict[str, str] | None:
    """The JSON message for the page of a notice or end frame (None for other frames)."""
    text = frame.payload.decode(errors="replace")
    if frame.type == "n":
        return {"type": "notice", "message": text}
    if frame.type == "e":
        return {"type": "closed", "message": text or "the session ended"}
    return None


class _Relay(asyncio.Protocol):
    """The proxy's reply line, then the session's frames into a queue for the browser."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.reply: asyncio.Future[bytes] = loop.create_future()
        self.frames: asyncio.Queue[Frame | None] = asyncio.Queue()
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = as_transport(transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.reply.done():
            self.buf += data
            line, sep, rest = self.buf.partition(b"\n")
            if not sep:
                if len(self.buf) > 16 * 1024:
                    self.reply.set_exception(ConnectionProblem("the proxy's reply is too long"))
                return
            self.reply.set_result(line)
            data = rest
        try:
            frames = self.decoder.feed(data)
        except BastionError as exc:
            self.frames.put_nowait(Frame("e", exc.message.encode()))
            self.frames.put_nowait(None)
            return
        for frame in frames:
            self.frames.put_nowait(frame)
        if self.frames.qsize() > _PAUSE_AT and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def next_taken(self) -> None:
        if self.paused and self.frames.qsize() < _PAUSE_AT // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(ConnectionProblem("the proxy closed the connection"))
        self.frames.put_nowait(None)

    def send(self, kind: FrameType, payload: bytes = b"") -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(kind, payload))


class JoinPages:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.live = LivePages(shell)

    async def page(self, ctx: PageContext) -> web.StreamResponse:
        session_id = ctx.request.match_info["session_id"]
        mode = parse_mode(ctx.request.query.get("mode", ""))
        tracker, modes = await self.live.trackers.get(ctx.session.identity, session_id)
        if mode not in modes:
            raise AccessDenied(f"you may not join this session as {mode}")
        spec = tracker.spec
        nonce = new_secret(18)
        terminate = (
            '<button type="button" id="join-terminate" class="danger">Terminate session</button>'
            if mode == "moderator"
            else ""
        )
        hint = {
            "observer": "You watch: your keystrokes do not reach the session.",
            "peer": "You are a peer: what you type reaches the session.",
            "moderator": "You moderate: you watch and may terminate the session.",
        }[mode]
        body = (
            f'<div class="term-bar"><strong>{esc(spec.owner)}</strong> on '
            f"{esc(spec.login)}@{esc(spec.node)} · joined as {esc(mode)} "
            f'{terminate}<a href="/web/sessions" id="join-leave">Leave</a></div>'
            f'<p class="muted">{esc(hint)}</p>'
            '<p id="join-status" role="status" class="muted">Connecting…</p>'
            '<ul id="join-notices" aria-live="polite"></ul>'
            f'<div id="join-terminal" class="term-pane" data-session="{esc(session_id)}" '
            f'data-mode="{esc(mode)}" data-style-nonce="{nonce}"></div>'
        )
        return ctx.page(
            f"Join {spec.owner}'s session",
            body,
            styles=("/web/vendor/xterm.css", "/web/static/web.css", "/web/static/admin.css"),
            scripts=(
                "/web/vendor/xterm.js",
                "/web/vendor/addon-fit.js",
                "/web/static/style-nonce.js",
                "/web/static/join.js",
            ),
            style_nonce=nonce,
        )

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        session, ws = await accept_websocket(request, "web join")
        session_id = request.match_info["session_id"]
        try:
            mode = parse_mode(request.query.get("mode", ""))
            transport, relay = await self._open(request, session, session_id, mode)
        except BastionError as exc:
            await _final(ws, "error", exc.message)
            return ws
        except Exception:
            log.exception("web join failed to open", session=session_id)
            await _final(ws, "error", "the session could not be joined")
            return ws
        log.info("web join", user=session.user, session=session_id, mode=mode)
        try:
            await ws.send_json({"type": "ready", "mode": mode, "session": session_id})
            why = await self._serve(ws, session, relay, mode)
        except (ConnectionError, RuntimeError):
            why = "the browser went away"
        finally:
            transport.close()
        await _final(ws, "closed", why)
        log.info("web join left", user=session.user, session=session_id, reason=why)
        return ws

    async def _open(
        self, request: web.Request, session: WebSession, session_id: str, mode: JoinMode
    ) -> tuple[asyncio.Transport, _Relay]:
        identity = session.identity
        remote = request.remote or ""
        tracker, modes = await self.live.trackers.get(identity, session_id)
        if mode not in modes:
            raise AccessDenied(f"you may not join this session as {mode}")
        node = tracker.spec.host_id or tracker.spec.node
        tls = await self.live.tls(identity, remote)
        addrs = proxy_candidates(request.host, await self.live.proxies())
        request_line = encode_join_request(node, session_id, mode)
        return await dial_proxy(addrs, tls, _Relay, request_line, what="join the session")

    async def _serve(
        self, ws: web.WebSocketResponse, session: WebSession, relay: _Relay, mode: JoinMode
    ) -> str:
        """Relay until the session ends (its reason), the page leaves or the web session
        expires."""
        reason = "you left the session"

        async def browser() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    if mode == "peer":
                        relay.send("i", msg.data)
                elif msg.type == WSMsgType.TEXT:
                    kind = _control(msg.data)
                    if kind == "terminate" and mode == "moderator":
                        relay.send("t")
                    elif kind == "bye":
                        return
                elif msg.type == WSMsgType.ERROR:
                    return

        async def node() -> str:
            while True:
                frame = await relay.frames.get()
                relay.next_taken()
                if frame is None:
                    return "the session ended"
                if frame.type == "o":
                    await ws.send_bytes(frame.payload)
                    continue
                message = ws_message(frame)
                if message is None:
                    continue
                if message["type"] == "closed":
                    return message["message"]
                await ws.send_json(message)

        remaining = (session.expires - self.shell.auth.clock.now()).total_seconds()
        reader = asyncio.ensure_future(browser())
        output = asyncio.ensure_future(node())
        expiry = asyncio.ensure_future(asyncio.sleep(max(0.0, remaining)))
        try:
            await asyncio.wait({reader, output, expiry}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, output, expiry):
                task.cancel()
        if output.done() and not output.cancelled():
            exc = output.exception()
            if exc is not None:
                raise exc
            return output.result()
        if expiry.done() and not expiry.cancelled():
            return "your web session expired"
        return reason


def _control(text: str) -> str:
    try:
        msg: Any = json.loads(text)
    except ValueError:
        return ""
    return str(msg.get("type", "")) if isinstance(msg, dict) else ""


async def _final(ws: web.WebSocketResponse, kind: str, message: str) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_json({"type": kind, "message": message})
        await ws.close()


def add_join_routes(app: web.Application, shell: Shell) -> None:
    pages = JoinPages(shell)
    app.router.add_get("/web/sessions/{session_id}/join", guarded_page(shell, pages.page))
    app.router.add_get("/web/sessions/{session_id}/join/ws", pages.websocket)
