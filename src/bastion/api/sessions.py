"""API routes of live sessions (:mod:`bastion.contract.sessions`; checks in
:mod:`bastion.auth.sessions`)."""

from __future__ import annotations

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.auth.server import AuthServer
from bastion.auth.sessions import SessionTrackerService, VisibleSession
from bastion.contract import sessions as s
from bastion.contract.base import Empty
from bastion.errors import BadParameter

__all__ = ["add_live_session_routes", "session_info"]


def session_info(seen: VisibleSession) -> s.SessionInfo:
    tracker, modes = seen
    spec = tracker.spec
    return s.SessionInfo(
        id=tracker.name,
        kind=spec.kind,
        node=spec.node,
        host_id=spec.host_id,
        owner=spec.owner,
        login=spec.login,
        command=spec.command,
        state=spec.state,
        participants=[
            s.ParticipantInfo(user=p.user, mode=p.mode, joined=p.joined) for p in spec.participants
        ],
        waiting_for=list(spec.waiting_for),
        started=spec.started,
        join_modes=list(modes),
    )


def add_live_session_routes(app: web.Application, auth: AuthServer) -> None:
    service = SessionTrackerService(auth)

    async def report(call: Call[s.TrackerBody]) -> Empty:
        if call.body.tracker.name != call.path("session_id"):
            raise BadParameter("the tracker's name does not match the URL")
        await service.report(call.guard.ctx.identity, call.body.tracker)
        return Empty()

    async def forget(call: Call[Empty]) -> Empty:
        await service.forget(call.guard.ctx.identity, call.path("session_id"))
        return Empty()

    async def list_sessions(call: Call[Empty]) -> s.SessionList:
        seen = await service.list(call.guard.ctx.identity)
        return s.SessionList(items=[session_info(x) for x in seen])

    async def get_session(call: Call[Empty]) -> s.SessionInfo:
        return session_info(await service.get(call.guard.ctx.identity, call.path("session_id")))

    bind(app, s.REPORT_SESSION, report)
    bind(app, s.FORGET_SESSION, forget)
    bind(app, s.LIST_SESSIONS, list_sessions)
    bind(app, s.GET_SESSION, get_session)
