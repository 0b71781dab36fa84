"""The web UI's admin and player JSON (:mod:`bastion.contract.web_admin`, audience ``web``):
the browser's cookie session is the caller; the pages themselves are in :mod:`bastion.web`."""

from __future__ import annotations

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.contract import web_admin as w
from bastion.contract.base import Empty
from bastion.errors import AuthenticationFailed
from bastion.web.admin_common import PageContext, Shell
from bastion.web.recordings import RecordingPages
from bastion.web.security import check_csrf

__all__ = ["add_web_admin_api_routes"]


def add_web_admin_api_routes(app: web.Application, shell: Shell) -> None:
    recordings = RecordingPages(shell)

    async def context(request: web.Request) -> PageContext:
        ctx = await shell.context(request)
        if ctx is None:
            raise AuthenticationFailed("sign in first (/web/login)")
        return ctx

    async def mfa_begin(call: Call[w.AdminMFABegin]) -> w.AdminMFAChallenge:
        check_csrf(call.request, call.request.headers.get("X-CSRF-Token", ""))
        ctx = await context(call.request)
        answer = await shell.mfa.begin(ctx.session.identity, call.body.action, call.body.fields)
        return w.AdminMFAChallenge.model_validate(answer)

    async def cast(call: Call[Empty]) -> web.StreamResponse:
        ctx = await context(call.request)
        return await recordings.cast(ctx, call.path("session_id"))

    bind(app, w.WEB_ADMIN_MFA_BEGIN, mfa_begin)
    bind(app, w.WEB_RECORDING_CAST, cast)
