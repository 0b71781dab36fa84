"""The login pages' side of app access: launching an app in the browser.

Layer: web (IO shell). ``GET /web/apps/NAME/launch?path=/p``: where the proxy sends a browser
that reached ``https://NAME.<proxy>/p`` without an app session.

* No web session: to ``/web/login?then=<this URL>``; after signing in the browser comes back.
* Signed in: RBAC over the app (:meth:`bastion.auth.apps.AppAccess.authorize`; unknown and
  forbidden apps get the same page), then a one-time code bound to this web session
  (:class:`bastion.services.app_sessions.AppSessions`) and a redirect to
  ``https://NAME.<proxy>/x-bastion-auth?code=...&then=/p``, where the proxy's app route sets the
  app's own cookie. ``path`` must be a normalized absolute path, else ``/``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from bastion.auth.apps import AppAccess
from bastion.errors import AccessDenied
from bastion.protocols.apphost import app_address, normalize_path
from bastion.services.credentials import hash_secret
from bastion.web.pages import page
from bastion.web.security import security_headers
from bastion.web.sessions import PREFIX, SESSION_COOKIE, current_session

__all__ = ["APP_ACCESS", "AUTH_PATH", "LAUNCH_PATH", "add_app_launch", "launch_url"]

APP_ACCESS = web.AppKey("app_access", AppAccess)
"""Where the app access built for this app is kept (the in-process proxy's app route)."""
LAUNCH_PATH = "/web/apps/{name}/launch"
AUTH_PATH = "/x-bastion-auth"
"""Path on the app's host where the proxy redeems the code and sets the app cookie."""


def launch_url(proxy_host: str, name: str, path: str) -> str:
    """The launch page's URL on the proxy for app ``name`` and the requested ``path``."""
    return f"https://{proxy_host}/web/apps/{name}/launch?" + urlencode({"path": path})


def add_app_launch(app: web.Application, access: AppAccess) -> None:
    async def launch(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = request.query.get("path", "/")
        if normalize_path(path.split("?", 1)[0]) is None:
            path = "/"
        session = current_session(request)
        if session is None:
            to_login = web.HTTPSeeOther("/web/login?" + urlencode({"then": str(request.rel_url)}))
            security_headers(to_login)
            raise to_login
        try:
            target = await access.authorize(session.identity, name)
        except AccessDenied as exc:
            return page(
                "App", "message.html", status=404, message=exc.message, css="error", details=""
            )
        bound = PREFIX + hash_secret(request.cookies.get(SESSION_COOKIE, ""))
        code = await access.sessions.new_code(session.identity, target.metadata.name, bound)
        host = app_address(target.metadata.name, target.spec.public_addr, request.host)
        response = web.HTTPSeeOther(
            f"https://{host}{AUTH_PATH}?" + urlencode({"code": code, "then": path})
        )
        security_headers(response)
        raise response

    app.router.add_get(LAUNCH_PATH, launch)
