"""Session recordings in the browser: the list (``/web/recordings``) and the player.

Layer: web. The list is :meth:`GuardedRecordings.list`, the same as ``bsh recordings ls``
(every recording with ``list`` on ``session``, otherwise the caller's own). The player page
(``/web/recordings/{id}``) loads ``static/player.js``, which fetches the asciicast from
``/web/recordings/{id}/cast`` (:meth:`GuardedRecordings.fetch` with purpose ``view``: the
owner or ``read`` on ``session``, the bytes checked against their SHA-256, audited as
``recording.view`` exactly as ``bsh play``) and replays it in xterm.js with the cast's own
timing: play/pause, seek, speed and skipping idle time. Beside the player: the session's audit
events, for those who may list events.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from urllib.parse import quote, urlencode

from aiohttp import web

from bastion.audit.log import AuditQuery
from bastion.auth.recordings import GuardedRecordings, RecordingService
from bastion.errors import NotFound
from bastion.recording.store import RecordingMeta, check_session_id
from bastion.services.credentials import new_secret
from bastion.web.admin_common import PageContext, Shell, esc, guarded_page
from bastion.web.security import security_headers

__all__ = ["PER_PAGE", "RecordingPages", "add_recording_page_routes", "duration", "human_size"]

PER_PAGE = 50
_CHUNK = 64 * 1024


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def duration(meta: RecordingMeta) -> str:
    if not meta.started or not meta.ended:
        return "-"
    seconds = max(0, int((meta.ended - meta.started).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def recording_rows(items: Sequence[RecordingMeta]) -> str:
    rows = []
    for m in items:
        href = f"/web/recordings/{quote(m.session_id, safe='')}"
        started = f"{m.started:%Y-%m-%d %H:%M:%S}" if m.started else "-"
        rows.append(
            f'<tr><td>{esc(started)}</td><th scope="row">{esc(m.user)}</th>'
            f"<td>{esc(m.login)}@{esc(m.node)}</td><td>{esc(m.command or m.kind)}</td>"
            f"<td>{esc(duration(m))}</td><td>{esc(human_size(m.size))}</td>"
            f'<td><a class="button" href="{esc(href)}" '
            f'aria-label="Play session {esc(m.session_id)}">Play</a></td></tr>'
        )
    return (
        '<table class="nodes" id="recordings"><thead><tr><th scope="col">Started (UTC)</th>'
        '<th scope="col">User</th><th scope="col">Target</th><th scope="col">Command</th>'
        '<th scope="col">Length</th><th scope="col">Size</th><th scope="col">Play</th></tr>'
        "</thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


class RecordingPages:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def _guarded(self, ctx: PageContext) -> GuardedRecordings:
        return GuardedRecordings(ctx.guard, RecordingService(self.shell.auth))

    async def list(self, ctx: PageContext) -> web.StreamResponse:
        try:
            page = max(1, int(ctx.request.query.get("page", "1") or 1))
        except ValueError:
            page = 1
        items = list(reversed(await self._guarded(ctx).list()))  # newest first
        pages = max(1, math.ceil(len(items) / PER_PAGE))
        page = min(page, pages)
        shown = items[(page - 1) * PER_PAGE : page * PER_PAGE]
        if not shown:
            body = (
                '<p class="empty">No recordings you may see yet. Sessions are recorded when '
                "they end; you see your own (and everyone's with list on session).</p>"
            )
        else:
            nav = [f"<span>{len(items)} recordings · page {page} of {pages}</span>"]
            if page > 1:
                nav.append(f'<a rel="prev" href="/web/recordings?page={page - 1}">Newer</a>')
            if page < pages:
                nav.append(f'<a rel="next" href="/web/recordings?page={page + 1}">Older</a>')
            body = recording_rows(shown) + f'<nav class="pager">{" ".join(nav)}</nav>'
        return ctx.page("Recordings", body)

    async def _visible(self, ctx: PageContext, session_id: str) -> RecordingMeta:
        check_session_id(session_id)
        guarded = self._guarded(ctx)
        for meta in await guarded.list():
            if meta.session_id == session_id:
                return meta
        if ctx.may("session", "read"):
            return await RecordingService(self.shell.auth).store.meta(session_id)
        raise NotFound(f"no recording of session {session_id} that you may see")

    async def player(self, ctx: PageContext) -> web.StreamResponse:
        session_id = ctx.request.match_info["session_id"]
        meta = await self._visible(ctx, session_id)
        nonce = new_secret(18)
        src = f"/web/recordings/{quote(session_id, safe='')}/cast"
        speeds = "".join(
            f'<option value="{s}"{" selected" if s == "1" else ""}>{s}×</option>'
            for s in ("0.5", "1", "2", "4", "8", "16")
        )
        started = f"{meta.started:%Y-%m-%d %H:%M:%S} UTC" if meta.started else ""
        body = (
            f"<p>{esc(meta.user)} as <strong>{esc(meta.login)}@{esc(meta.node)}</strong> "
            f"{esc(started)} · {esc(duration(meta))}"
            f"{' · input recorded' if meta.input_recorded else ''}"
            f"{'' if meta.complete else ' · incomplete (the node restarted)'}</p>"
            '<div class="player-layout"><section class="player-main" aria-label="Player">'
            '<div class="controls" role="group" aria-label="Playback">'
            '<button type="button" id="play" disabled>Play</button>'
            '<label class="visually-hidden" for="seek">Position</label>'
            '<input type="range" id="seek" min="0" max="0" step="0.1" value="0" disabled>'
            '<span id="clock" aria-live="off">0:00 / 0:00</span>'
            f'<label>Speed <select id="speed">{speeds}</select></label>'
            '<label><input type="checkbox" id="skip-idle" checked> Skip idle</label></div>'
            f'<div id="player" data-src="{esc(src)}" data-state="loading" '
            f'data-style-nonce="{nonce}" aria-label="Recording"></div>'
            '<p id="player-status" role="status" class="muted">Loading the recording…</p>'
            "</section>" + await self._events(ctx, session_id) + "</div>"
        )
        return ctx.page(
            f"Recording {session_id}",
            body,
            styles=("/web/vendor/xterm.css", "/web/static/web.css", "/web/static/admin.css"),
            scripts=("/web/vendor/xterm.js", "/web/static/style-nonce.js", "/web/static/player.js"),
            style_nonce=nonce,
        )

    async def _events(self, ctx: PageContext, session_id: str) -> str:
        if not ctx.may("event", "list"):
            return ""
        events = [
            e
            for e in await ctx.guard.search_events(AuditQuery(limit=0))
            if e.session_id == session_id
        ]
        items = "".join(
            f'<li class="{esc(e.outcome)}"><time>{esc(f"{e.time:%H:%M:%S}")}</time> '
            f"<strong>{esc(e.type)}</strong> {esc(e.user)}"
            f"{' → ' + esc(e.target) if e.target else ''}"
            f"{' · ' + esc(e.reason) if e.reason else ''} "
            f'<a href="/web/admin/audit/event?{esc(urlencode({"id": e.id}))}">details</a></li>'
            for e in events[-200:]
        )
        return (
            '<aside class="session-events" aria-label="Audit events of this session">'
            f"<h2>Audit events</h2><ol>{items or '<li>none</li>'}</ol></aside>"
        )

    async def cast(self, ctx: PageContext, session_id: str) -> web.StreamResponse:
        """The asciicast bytes for the player (audited as ``recording.view``)."""
        check_session_id(session_id)
        meta, path = await self._guarded(ctx).fetch(session_id, "view")
        try:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/x-asciicast",
                    "X-Bastion-Recording-SHA256": meta.sha256,
                }
            )
            security_headers(response)
            response.content_length = path.stat().st_size
            await response.prepare(ctx.request)
            with path.open("rb") as body:
                while chunk := await asyncio.to_thread(body.read, _CHUNK):
                    await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            path.unlink(missing_ok=True)


def add_recording_page_routes(app: web.Application, shell: Shell) -> RecordingPages:
    pages = RecordingPages(shell)
    app.router.add_get("/web/recordings", guarded_page(shell, pages.list))
    app.router.add_get("/web/recordings/{session_id}", guarded_page(shell, pages.player))
    return pages
