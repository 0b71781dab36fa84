"""Registers the web UI's administration, recordings and live-session pages (docs/web-ui.md).

Layer: web. Each page module registers its own routes; the audiences of the pages are listed
in :data:`bastion.api.audiences.PAGE_AUDIENCES` (all ``web``: the session cookie passes the
gate, then RBAC decides per page and per action).
"""

from __future__ import annotations

from aiohttp import web

from bastion.auth.server import AuthServer
from bastion.auth.users import UserService
from bastion.web.admin_audit import add_audit_routes
from bastion.web.admin_common import Shell
from bastion.web.admin_live import add_live_routes
from bastion.web.admin_locks import add_lock_routes
from bastion.web.admin_roles import add_role_routes
from bastion.web.admin_tokens import add_token_routes
from bastion.web.admin_users import add_user_routes
from bastion.web.recordings import add_recording_page_routes

__all__ = ["add_admin_routes"]


def add_admin_routes(app: web.Application, auth: AuthServer, users: UserService) -> Shell:
    shell = Shell(auth, users)
    add_user_routes(app, shell)
    add_role_routes(app, shell)
    add_lock_routes(app, shell)
    add_token_routes(app, shell)
    add_audit_routes(app, shell)
    add_recording_page_routes(app, shell)
    add_live_routes(app, shell)
    return shell
