"""What every page of the web UI's administration, recordings and sessions has in common.

Layer: web (IO shell helpers over aiohttp). A page handler is wrapped by :func:`guarded_page`:
it gets the signed-in browser session (the gate admitted it) and the caller's
:class:`~bastion.auth.guarded.GuardedAuth` (the same RBAC and audit as ``bctl``), and any
:class:`~bastion.errors.BastionError` becomes an HTML page with the error's status (403 for a
refusal) instead of a traceback. State changes are POST forms carrying the CSRF token
(double submit, :func:`bastion.web.security.check_csrf`), checked before anything else.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from bastion.auth.guarded import GuardedAuth
from bastion.auth.server import AuthServer
from bastion.auth.users import UserService
from bastion.errors import AccessDenied, BastionError
from bastion.web.admin_webauthn import WebAdminMFA
from bastion.web.pages import Raw
from bastion.web.security import CSRF_COOKIE, CSRF_FIELD, check_csrf, csrf_token, set_cookie
from bastion.web.sessions import WebSession, current_session
from bastion.web.ui import app_page

__all__ = [
    "ADMIN_SCRIPTS",
    "MAX_FORM",
    "PageContext",
    "Shell",
    "esc",
    "guarded_page",
    "hidden_csrf",
    "nav",
    "notice",
]

log = structlog.get_logger("bastion.web.admin")
MAX_FORM = 256 * 1024
"""Largest admin form accepted (a role's YAML fits many times over)."""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass(slots=True)
class PageContext:
    """One request to an application page: who, with which rights, and the CSRF token."""

    request: web.Request
    session: WebSession
    guard: GuardedAuth
    csrf: str
    new_cookies: dict[str, str] = field(default_factory=dict)

    @property
    def user(self) -> str:
        return self.session.user

    @property
    def remote(self) -> str:
        return self.request.remote or ""

    def may(self, kind: str, verb: str) -> bool:
        """Whether the caller's roles allow ``verb`` on ``kind`` (for showing actions only;
        every action is checked again, and audited, by GuardedAuth)."""
        return self.guard.ctx.role_set.check_rule(kind, verb).allowed

    async def form(self) -> dict[str, str]:
        """The POSTed form, after the CSRF check.

        Raises:
            AccessDenied: too large, or the CSRF token is missing or wrong.
        """
        request = self.request
        if request.content_length is not None and request.content_length > MAX_FORM:
            raise AccessDenied("form too large")
        data = await request.post()
        values = {k: v for k, v in data.items() if isinstance(v, str)}
        check_csrf(request, values.get(CSRF_FIELD, ""))
        return values

    def page(
        self,
        title: str,
        body: str,
        *,
        status: int = 200,
        scripts: tuple[str, ...] = (),
        styles: tuple[str, ...] = ("/web/static/web.css", "/web/static/admin.css"),
        style_nonce: str = "",
        meta: str = "",
    ) -> web.Response:
        """The page with the navigation, the CSRF meta tag (for scripts) and ``body``."""
        head = f'<meta name="csrf-token" content="{esc(self.csrf)}">{meta}'
        response = app_page(
            title,
            Raw(head + nav(self) + body),
            status=status,
            scripts=scripts,
            styles=styles,
            style_nonce=style_nonce,
        )
        if CSRF_COOKIE in self.new_cookies:
            set_cookie(response, CSRF_COOKIE, self.new_cookies[CSRF_COOKIE], max_age=3600 * 12)
        return response


ADMIN_SCRIPTS = ("/web/static/webauthn-codec.js", "/web/static/admin.js")
"""The script of the admin pages: confirmations and the admin-MFA ceremony before a change."""


class Shell:
    """Builds a :class:`PageContext` for a request (auth, the user service, admin MFA)."""

    def __init__(self, auth: AuthServer, users: UserService) -> None:
        self.auth = auth
        self.users = users
        self.mfa = WebAdminMFA(auth)

    async def mfa_meta(self, ctx: PageContext) -> str:
        """The meta tag that tells ``admin.js`` to ask for the security key before a change."""
        required, _ = await self.mfa.policy(ctx.session.identity)
        return f'<meta name="admin-mfa" content="{"required" if required else "off"}">'

    async def change(self, ctx: PageContext, kind: str, verb: str) -> dict[str, str]:
        """The form of an admin change, once the CSRF token, the caller's right (``verb`` on
        ``kind``, audited when refused) and admin MFA (when the cluster requires it) pass.

        Raises:
            AccessDenied: any of them fails.
        """
        form = await ctx.form()
        await ctx.guard.require(kind, verb)
        action = ctx.request.rel_url.raw_path
        await self.mfa.check(ctx.session.identity, action, form, ctx.remote)
        return form

    async def context(self, request: web.Request) -> PageContext | None:
        session = current_session(request)
        if session is None:
            return None
        guard = await GuardedAuth.for_identity(
            self.auth, self.users, session.identity, request.remote or ""
        )
        cookies: dict[str, str] = {}
        token = csrf_token(request, cookies)
        return PageContext(request, session, guard, token, cookies)


PageHandler = Callable[[PageContext], Awaitable[web.StreamResponse]]


def guarded_page(
    shell: Shell, handler: PageHandler
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A route handler: sign-in first (GET: to the login page and back), errors as pages."""

    async def serve(request: web.Request) -> web.StreamResponse:
        ctx = await shell.context(request)
        if ctx is None:
            if request.method == "GET":
                raise web.HTTPSeeOther(f"/web/login?then={request.path}")
            return app_page(
                "Signed out",
                Raw(notice("Your session ended: sign in again (/web/login).", error=True)),
                status=401,
            )
        try:
            return await handler(ctx)
        except BastionError as exc:
            if isinstance(exc, AccessDenied):
                log.info("web page refused", path=request.path, user=ctx.user, reason=exc.message)
            return ctx.page("Not done", notice(exc.message, error=True), status=exc.http_status)

    return serve


def hidden_csrf(ctx: PageContext) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{esc(ctx.csrf)}">'


def notice(message: str, *, error: bool = False) -> str:
    css, role = ("error", "alert") if error else ("ok", "status")
    return f'<p class="notice {css}" role="{role}">{esc(message)}</p>'


_SECTIONS = (
    ("Resources", "/web/nodes", None),
    ("Sessions", "/web/sessions", None),
    ("Requests", "/web/requests", None),
    ("Recordings", "/web/recordings", None),
    ("Users", "/web/admin/users", ("user", "list")),
    ("Roles", "/web/admin/roles", ("role", "list")),
    ("Locks", "/web/admin/locks", ("lock", "list")),
    ("Tokens", "/web/admin/tokens", ("token", "list")),
    ("Connectors", "/web/admin/connectors", ("cluster_auth_preference", "read")),
    ("Audit log", "/web/admin/audit", ("event", "list")),
)


def nav(ctx: PageContext) -> str:
    """The top navigation: the sections the caller may use (the pages check again)."""
    links = "".join(
        f'<a href="{href}">{esc(title)}</a>'
        for title, href, right in _SECTIONS
        if right is None or ctx.may(*right)
    )
    return (
        f'<nav class="top" aria-label="Sections"><span class="sections">{links}</span>'
        f'<span>Signed in as <strong>{esc(ctx.user)}</strong> · <a href="/web/account">Account</a>'
        "</span></nav>"
    )
