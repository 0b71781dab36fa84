"""The login pages' side of app access: launching an app in the browser.

Layer: web (IO shell). ``GET /web/apps/NAME/launch?path=/p``: where the proxy sends a browser
that reached ``https://NAME.<proxy>/p`` without an app session.

* No web session: to ``/web/login?then=<this URL>``; after signing in the browser comes back.
* Signed in: RBAC over the app (:meth:`bastion.auth.apps.AppAccess.authorize`; unknown and
  forbidden apps get the same page), then a one-time code bound to this web session
  (:class:`bastion.services.app_sessions.AppSessions`) and a page that moves on at once (meta
  refresh, and a link) to ``https://NAME.<proxy>/x-bastion-auth?code=...&then=/p``, where the
  proxy's app route sets the app's own cookie. ``path`` must be a normalized absolute path,
  else ``/``. Not a redirect: after signing in the browser reaches launch through the login
  form's redirect, and browsers apply the login page's CSP ``form-action 'self'`` to every
  hop of that chain, so a redirect to the app's host would be blocked (found by the Chromium
  test).
* Per-session MFA (the roles or the cluster require it for this app): instead of the code,
  a step-up page runs a WebAuthn ceremony (``static/webauthn.js``, ``verify``) against
  ``POST /web/apps/NAME/mfa/begin|finish`` (challenge scope ``app:NAME``, CSRF-checked); the
  code then carries the identity MFA-verified for this app, and ``finish`` answers the URL to
  go to.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from aiohttp import web

from bastion.auth.apps import AppAccess, mfa_verified_for
from bastion.errors import AccessDenied, AuthenticationFailed, BadParameter
from bastion.protocols.apphost import app_address, normalize_path
from bastion.services.credentials import hash_secret
from bastion.types.identity import Identity
from bastion.web.body import read_json
from bastion.web.pages import WEBAUTHN_SCRIPTS, page
from bastion.web.security import check_csrf, csrf_token, security_headers
from bastion.web.sessions import PREFIX, SESSION_COOKIE, WebSession, current_session

__all__ = [
    "APP_ACCESS",
    "AUTH_PATH",
    "LAUNCH_PATH",
    "MFA_PATH",
    "add_app_launch",
    "launch_url",
]

APP_ACCESS = web.AppKey("app_access", AppAccess)
"""Where the app access built for this app is kept (the in-process proxy's app route)."""
LAUNCH_PATH = "/web/apps/{name}/launch"
MFA_PATH = "/web/apps/{name}/mfa"
AUTH_PATH = "/x-bastion-auth"
"""Path on the app's host where the proxy redeems the code and sets the app cookie."""


def launch_url(proxy_host: str, name: str, path: str) -> str:
    """The launch page's URL on the proxy for app ``name`` and the requested ``path``."""
    return f"https://{proxy_host}/web/apps/{name}/launch?" + urlencode({"path": path})


def _path(value: object) -> str:
    path = value if isinstance(value, str) else "/"
    return path if normalize_path(path.split("?", 1)[0]) is not None else "/"


async def _to_app(
    request: web.Request, access: AppAccess, identity: Identity, name: str, path: str
) -> str:
    """A one-time code for ``identity`` bound to this web session: the app's redeem URL."""
    target = await access.authorize(identity, name)
    bound = PREFIX + hash_secret(request.cookies.get(SESSION_COOKIE, ""))
    code = await access.sessions.new_code(identity, target.metadata.name, bound)
    host = app_address(target.metadata.name, target.spec.public_addr, request.host)
    return f"https://{host}{AUTH_PATH}?" + urlencode({"code": code, "then": path})


def _moving_on(url: str, name: str) -> web.Response:
    url, name = escape(url), escape(name)
    response = web.Response(
        text=(
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="0;url={url}">'
            f"<title>Opening {name} · Bastion</title></head><body>"
            f'<p><a href="{url}">Continue to {name}</a></p></body></html>'
        ),
        content_type="text/html",
    )
    security_headers(response)
    return response


def add_app_launch(app: web.Application, access: AppAccess) -> None:
    async def launch(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = _path(request.query.get("path", "/"))
        session = current_session(request)
        if session is None:
            to_login = web.HTTPSeeOther("/web/login?" + urlencode({"then": str(request.rel_url)}))
            security_headers(to_login)
            raise to_login
        try:
            target, mfa_required = await access.decide(session.identity, name)
            name = target.metadata.name
            if mfa_required and not mfa_verified_for(session.identity, name):
                cookies: dict[str, str] = {}
                return page(
                    "Confirm it is you",
                    "app_mfa.html",
                    scripts=WEBAUTHN_SCRIPTS,
                    cookies=cookies,
                    csrf=csrf_token(request, cookies),
                    app=name,
                    endpoint=MFA_PATH.format(name=name),
                    path=path,
                )
            return _moving_on(await _to_app(request, access, session.identity, name, path), name)
        except AccessDenied as exc:
            return page(
                "App", "message.html", status=404, message=exc.message, css="error", details=""
            )

    async def _signed_in(request: web.Request) -> tuple[WebSession, dict[str, object]]:
        check_csrf(request, request.headers.get("X-CSRF-Token", ""))
        body = await read_json(request)
        session = current_session(request)
        if session is None:
            raise AuthenticationFailed("sign in first (/web/login)")
        return session, body

    async def mfa_begin(request: web.Request) -> web.Response:
        session, _ = await _signed_in(request)
        options = await access.mfa_begin(session.identity, request.match_info["name"])
        response = web.json_response(options)
        security_headers(response)
        return response

    async def mfa_finish(request: web.Request) -> web.Response:
        session, body = await _signed_in(request)
        credential = body.get("credential")
        if not isinstance(credential, dict):
            raise BadParameter("field 'credential' must be the PublicKeyCredential JSON")
        name = request.match_info["name"]
        identity = await access.mfa_finish(session.identity, name, credential)
        url = await _to_app(request, access, identity, name, _path(body.get("then")))
        response = web.json_response({"redirect": url})
        security_headers(response)
        return response

    app.router.add_get(LAUNCH_PATH, launch)
    app.router.add_post(MFA_PATH + "/begin", mfa_begin)
    app.router.add_post(MFA_PATH + "/finish", mfa_finish)
