"""The web UI's JSON endpoints (:mod:`bastion.contract.web`, audience ``web``): the browser's
cookie session is the caller, admitted by the gate middleware like every page."""

from __future__ import annotations

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.auth.server import AuthServer
from bastion.auth.users import UserService
from bastion.contract import web as w
from bastion.contract.base import Empty
from bastion.errors import AuthenticationFailed
from bastion.web.resources import NodeLister
from bastion.web.sessions import current_session

__all__ = ["add_web_api_routes"]


def add_web_api_routes(app: web.Application, auth: AuthServer, users: UserService) -> None:
    lister = NodeLister(auth, users)

    async def nodes(call: Call[Empty]) -> w.NodePage:
        session = current_session(call.request)
        if session is None:
            raise AuthenticationFailed("sign in first (/web/login)")
        return await lister.page(session, call.query(w.NodeQuery), call.remote)

    bind(app, w.WEB_NODES, nodes)
