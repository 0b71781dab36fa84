"""Routes of the login pages (``/web/...``) on the proxy's (and auth's) aiohttp app.

Layer: web (IO shell). Pages:

* ``GET /web/login``, ``POST /web/login``: password (+ TOTP) sign-in; SSO buttons.
* ``GET /web/``: who is signed in; ``POST /web/logout``. ``GET /`` and ``GET /web`` lead there.
* ``GET /web/invite/TOKEN``: where ``bctl users add``'s invite URL leads: how to accept it.
* ``GET|POST /web/sso/NAME/start?request=ID``: a ``bsh login --auth=NAME`` continues here; the
  browser gets the binding cookie and goes to the IdP (headless logins first show a confirmation
  page with the request code).
* ``GET /web/sso/NAME/login``: SSO sign-in for the browser itself (a web session).
* ``GET /web/sso/NAME/callback`` (OIDC, GitHub) and ``POST /web/sso/NAME/acs`` (SAML): the IdP
  sends the browser back; on success the browser goes on to bsh's localhost callback (or sees
  "return to your terminal"); on failure it sees the reason, which is also audited.
* ``GET /web/static/NAME``: the CSS and JS shipped in the package.

Errors are HTML pages here (the JSON error shape is for ``/v1``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from bastion.auth.users import UserService
from bastion.errors import AccessDenied, BastionError
from bastion.protocols.apphost import safe_redirect, split_host
from bastion.services.credentials import new_secret
from bastion.sso.requests import REQUEST_TTL, SSORequest, display_code
from bastion.sso.service import SSOService
from bastion.types.identity import Identity
from bastion.web.account import add_account_routes
from bastion.web.admin_pages import add_admin_routes
from bastion.web.join import add_join_routes
from bastion.web.pages import WEBAUTHN_SCRIPTS, Raw, page, static_file
from bastion.web.requests import add_request_pages
from bastion.web.resources import NodeLister, OtherResources
from bastion.web.security import CSRF_FIELD, check_csrf, csrf_token, security_headers, set_cookie
from bastion.web.sessions import SESSION_COOKIE, WebSessions, current_session
from bastion.web.terminal import add_terminal_routes
from bastion.web.webauthn import add_webauthn_routes, ephemeral_public_key

__all__ = ["WebApp", "add_web_routes", "invite_command"]

log = structlog.get_logger("bastion.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BINDING_COOKIE = "bastion_sso"
WEB_SESSION_TTL = timedelta(hours=12)
MAX_FORM = 256 * 1024
"""Largest login form or SAML POST accepted."""


def _base_url(request: web.Request) -> str:
    return f"https://{request.host}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class WebApp:
    def __init__(self, sso: SSOService, users: UserService) -> None:
        self.sso = sso
        self.users = users
        self.auth = sso.auth
        self.sessions = WebSessions(sso.auth.deps.backend, sso.auth.clock)

    # ---- helpers -------------------------------------------------------------------------------

    def _message(
        self, title: str, message: str, status: int = 200, ok: bool = False, details: str = ""
    ) -> web.Response:
        return page(
            title,
            "message.html",
            status=status,
            message=message,
            css="ok" if ok else "error",
            details=Raw(details),
        )

    async def _form(self, request: web.Request) -> dict[str, str]:
        if request.content_length is not None and request.content_length > MAX_FORM:
            raise AccessDenied("form too large")
        data = await request.post()
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def _error_page(self, exc: BastionError) -> web.Response:
        return self._message("Sign-in failed", exc.message, status=exc.http_status)

    async def _session_response(
        self, location: str, identity: Identity, method: str, mfa_device: str = ""
    ) -> web.Response:
        expires = min(identity.expires, self.auth.clock.now() + WEB_SESSION_TTL)
        identity = identity.model_copy(update={"expires": expires})
        token = await self.sessions.create(identity, method, mfa_device)
        response = web.HTTPSeeOther(location)
        security_headers(response)
        max_age = int((expires - self.auth.clock.now()).total_seconds())
        set_cookie(response, SESSION_COOKIE, token, max_age=max_age, samesite="Lax")
        raise response

    # ---- pages ---------------------------------------------------------------------------------

    async def invite_page(self, request: web.Request) -> web.Response:
        """Where the invite URL leads: how to accept it with bsh (the password and the second
        factor are set there), or why it no longer works (used, expired, withdrawn). Only the
        holder of the token learns its state; the page names no user."""
        token = request.match_info["token"]
        if not INVITE_TOKEN.fullmatch(token):
            return self._message("Invite", "This is not an invite link.", status=404)
        state = await self.users.invite_state(token)
        if state != "valid":
            title, message = INVITE_STATES.get(state, INVITE_STATES["unknown"])
            return self._message(title, message, status=404 if state == "unknown" else 410)
        return page(
            "Accept your invite",
            "invite.html",
            command=invite_command(request.host, token),
            cluster=self.auth.deps.cluster,
        )

    async def static(self, request: web.Request) -> web.Response:
        return static_file(request.match_info["name"])

    async def login_page(self, request: web.Request, error: str = "") -> web.Response:
        cookies: dict[str, str] = {}
        csrf = csrf_token(request, cookies)
        buttons = "".join(
            f'<a class="button" href="/web/sso/{_esc(c["name"])}/login">'
            f"Sign in with {_esc(c['display'])}</a>"
            for c in await self.sso.public_connectors()
        )
        if buttons:  # no connector: no (empty) card at all
            buttons = f'<section class="card" aria-label="Single sign-on">{buttons}</section>'
        return page(
            "Sign in",
            "login.html",
            status=401 if error else 200,
            scripts=WEBAUTHN_SCRIPTS,
            cookies=cookies,
            error=error,
            csrf=csrf,
            connectors=Raw(buttons),
            then=after_login(request, request.query.get("then", "")) or "",
        )

    async def login_submit(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        try:
            check_csrf(request, form.get(CSRF_FIELD, ""))
            certs = await self.users.login(
                form.get("user", ""),
                form.get("password", ""),
                form.get("otp", ""),
                ephemeral_public_key(),
                WEB_SESSION_TTL,
                request.remote or "",
            )
        except BastionError as exc:
            return await self.login_page(request, error=exc.message)
        identity = certs.identity
        # Only this cluster's pages and app addresses (no open redirect: protocols/apphost).
        then = after_login(request, form.get("then", "")) or "/web/"
        return await self._session_response(then, identity, "password", identity.mfa_device)

    async def home(self, request: web.Request) -> web.Response:
        session = current_session(request)
        if session is None:
            raise web.HTTPSeeOther("/web/login")
        cookies: dict[str, str] = {}
        return page(
            "Bastion",
            "home.html",
            cookies=cookies,
            user=session.user,
            roles=", ".join(session.roles) or "-",
            expires=f"{session.expires:%Y-%m-%d %H:%M} UTC",
            csrf=csrf_token(request, cookies),
        )

    async def logout(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        try:
            check_csrf(request, form.get(CSRF_FIELD, ""))
        except BastionError as exc:
            return self._error_page(exc)
        await self.sessions.delete(request.cookies.get(SESSION_COOKIE, ""))
        response = web.HTTPSeeOther("/web/login")
        response.del_cookie(SESSION_COOKIE, path="/web/")
        raise response

    # ---- SSO -----------------------------------------------------------------------------------

    async def sso_start(self, request: web.Request) -> web.Response:
        connector = request.match_info["connector"]
        if request.method == "POST":
            form = await self._form(request)
            request_id = form.get("request", "")
        else:
            form, request_id = {}, request.query.get("request", "")
        try:
            pending = await self.sso.requests.get(request_id)
            if pending.headless and not pending.web and request.method == "GET":
                return await self._confirm_page(request, connector, request_id)
            if request.method == "POST":
                check_csrf(request, form.get(CSRF_FIELD, ""))
            return await self._to_idp(request, connector, request_id)
        except BastionError as exc:
            await self.sso.fail_request(connector, exc.message, request.remote or "")
            return self._error_page(exc)

    async def _confirm_page(
        self, request: web.Request, connector: str, request_id: str
    ) -> web.Response:
        pending = await self.sso.requests.get(request_id)
        cookies: dict[str, str] = {}
        return page(
            "Confirm the login",
            "sso_confirm.html",
            cookies=cookies,
            cluster=self.auth.cluster,
            connector=connector,
            connector_url=connector,
            remote=pending.remote_addr or "unknown",
            code=display_code(request_id),
            csrf=csrf_token(request, cookies),
            request=request_id,
        )

    async def _to_idp(self, request: web.Request, connector: str, request_id: str) -> web.Response:
        url, binding = await self.sso.begin(
            connector, request_id, _base_url(request), request.remote or ""
        )
        response = web.HTTPSeeOther(url)
        security_headers(response, form_targets=(_origin(url),))
        # SameSite=None: a SAML IdP comes back with a cross-site POST, which Lax cookies miss.
        set_cookie(
            response,
            BINDING_COOKIE,
            binding,
            max_age=int(REQUEST_TTL.total_seconds()),
            path="/web/sso/",
            samesite="None",
        )
        raise response

    async def sso_web_login(self, request: web.Request) -> web.Response:
        """The login page's SSO button: the same flow, ending in a browser session."""
        connector = request.match_info["connector"]
        try:
            pending = await self.sso.create_request(
                connector,
                ephemeral_public_key(),
                WEB_SESSION_TTL,
                new_secret(32),
                "",
                request.remote or "",
                web=True,
            )
            return await self._to_idp(request, connector, pending.id)
        except BastionError as exc:
            await self.sso.fail_request(connector, exc.message, request.remote or "")
            return self._error_page(exc)

    async def sso_callback(self, request: web.Request) -> web.Response:
        connector = request.match_info["connector"]
        params = {k: v for k, v in request.query.items() if isinstance(v, str)}
        try:
            done = await self.sso.finish_oauth(
                connector, params, request.cookies.get(BINDING_COOKIE, ""), request.remote or ""
            )
        except BastionError as exc:
            return self._error_page(exc)
        return await self._after_login(done)

    async def sso_acs(self, request: web.Request) -> web.Response:
        connector = request.match_info["connector"]
        form = await self._form(request)
        try:
            done = await self.sso.finish_saml(
                connector,
                form.get("SAMLResponse", ""),
                form.get("RelayState", ""),
                request.cookies.get(BINDING_COOKIE, ""),
                _base_url(request),
                request.remote or "",
            )
        except BastionError as exc:
            return self._error_page(exc)
        return await self._after_login(done)

    async def _after_login(self, done: SSORequest) -> web.Response:
        result = done.result or {}
        if done.web:
            await self.sso.requests.delete(done)
            identity = Identity(
                cluster=str(result.get("cluster") or self.auth.cluster),
                user=done.user,
                roles=tuple(str(r) for r in result.get("roles") or ()),
                traits={"sso_connector": (done.connector,)},
                expires=datetime.fromisoformat(str(result["expires"])),
            )
            return await self._session_response("/web/", identity, f"sso:{done.connector}")
        if done.client_redirect:
            response = web.HTTPSeeOther(self.sso.client_redirect_url(done))
            security_headers(response)
            raise response
        return self._message(
            "Signed in",
            f"You are signed in as {done.user}. Return to your terminal: bsh has your "
            "certificates. You can close this window.",
            ok=True,
        )


async def to_web_pages(request: web.Request) -> web.Response:
    """A browser pointed at the proxy's address lands on the pages, not on an API error."""
    response = web.HTTPFound("/web/")
    security_headers(response)
    raise response


INVITE_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
_ASK = " Ask your admin for a new invite (bctl users reset NAME)."
INVITE_STATES: dict[str, tuple[str, str]] = {
    "used": ("Invite already used", "This invite has already been used." + _ASK),
    "expired": ("Invite expired", "This invite has expired." + _ASK),
    "revoked": (
        "Invite withdrawn",
        "This invite was withdrawn (the account was reset or removed)." + _ASK,
    ),
    "unknown": ("Invite not valid", "This invite link is not valid." + _ASK),
}
"""The invite page's title and message for an invite that no longer works."""


def invite_command(host: str, token: str) -> str:
    """The command that accepts an invite through ``host`` (the address the browser used)."""
    return f"bsh login --proxy={host} --invite={token} --ca-pin=sha256:..."


def after_login(request: web.Request, then: str) -> str | None:
    """Where a sign-in may lead: a ``/web/`` page or an app address under this proxy's host
    name (:func:`bastion.protocols.apphost.safe_redirect`); None refuses."""
    domain, port = split_host(request.host)
    return safe_redirect(then, domain, port) if then else None


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


def add_web_routes(app: web.Application, sso: SSOService, users: UserService) -> WebApp:
    webapp = WebApp(sso, users)
    r = app.router
    r.add_get("/web/static/{name}", webapp.static)
    r.add_get("/web/login", webapp.login_page)
    r.add_post("/web/login", webapp.login_submit)
    r.add_get("/web/", webapp.home)
    r.add_get("/", to_web_pages)
    r.add_get("/web", to_web_pages)
    r.add_get("/web/invite/{token}", webapp.invite_page)
    r.add_post("/web/logout", webapp.logout)
    r.add_get("/web/sso/{connector}/start", webapp.sso_start)
    r.add_post("/web/sso/{connector}/start", webapp.sso_start)
    r.add_get("/web/sso/{connector}/login", webapp.sso_web_login)
    r.add_get("/web/sso/{connector}/callback", webapp.sso_callback)
    r.add_post("/web/sso/{connector}/acs", webapp.sso_acs)
    add_webauthn_routes(app, sso.auth, users, webapp.sessions)
    r.add_get("/web/nodes", NodeLister(sso.auth, users).handle)  # the web UI (docs/web-ui.md)
    others = OtherResources(sso.auth, users)  # databases and apps (docs/web-ui.md)
    r.add_get("/web/databases", others.databases)
    r.add_get("/web/apps", others.apps)
    add_terminal_routes(app, sso.auth, users)
    shell = add_admin_routes(app, sso.auth, users)  # admin, recordings, sessions (docs/web-ui.md)
    add_join_routes(app, shell)  # joining a live session (docs/moderated-sessions.md)
    add_account_routes(app, shell)  # MFA devices, passkeys, password (docs/web-ui.md)
    add_request_pages(app, sso.auth, shell)  # access requests (docs/access-requests.md)
    return webapp
