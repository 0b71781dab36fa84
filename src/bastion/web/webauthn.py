"""The WebAuthn ceremonies in the browser: register a key, verify with it, sign in with a passkey.

Layer: web (IO shell). The relying party checks are :class:`bastion.mfa.service.MFAService`'s
(challenge single use and bound to user and scope, origin, rp_id, counter, attestation policy);
this module only carries JSON between ``static/webauthn.js`` and that service:

* ``GET /web/mfa``: the page (signed-in local users; SSO users use their IdP's MFA).
* ``POST /web/mfa/register/begin|finish``: ``navigator.credentials.create()`` (``passkey``: a
  discoverable credential for passwordless sign-in).
* ``POST /web/mfa/verify/begin|finish``: ``navigator.credentials.get()`` for this session
  (scope ``web:session``); the session records the device (step-up).
* ``POST /web/passkey/begin|finish``: passwordless sign-in from the login page (scope
  ``login``, no user named: the authenticator picks the discoverable credential).

Every POST needs the CSRF token in ``X-CSRF-Token``; errors are the API's JSON error shape.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bastion.auth.api_agents import read_json
from bastion.auth.server import AuthServer
from bastion.errors import AccessDenied, AuthenticationFailed, BadParameter, NotFound
from bastion.locks.matcher import LockTargets
from bastion.web.pages import page
from bastion.web.security import check_csrf, csrf_token, security_headers, set_cookie
from bastion.web.sessions import SESSION_COOKIE, WebSession, WebSessions

__all__ = ["SESSION_SCOPE", "add_webauthn_routes"]

SESSION_SCOPE = "web:session"
LOGIN_SCOPE = "login"


class WebAuthnPages:
    def __init__(self, auth: AuthServer, sessions: WebSessions) -> None:
        self.auth = auth
        self.sessions = sessions

    async def _session(self, request: web.Request) -> WebSession:
        session = await self.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if session is None:
            raise AuthenticationFailed("sign in first (/web/login)")
        if session.method.startswith("sso:"):
            raise AccessDenied(
                "SSO users register security keys with their identity provider, not here"
            )
        return session

    async def _body(self, request: web.Request) -> dict[str, Any]:
        check_csrf(request, request.headers.get("X-CSRF-Token", ""))
        return await read_json(request)

    @staticmethod
    def _credential(body: dict[str, Any]) -> dict[str, Any]:
        credential = body.get("credential")
        if not isinstance(credential, dict):
            raise BadParameter("field 'credential' must be the PublicKeyCredential JSON")
        return credential

    @staticmethod
    def _json(data: dict[str, Any]) -> web.Response:
        response = web.json_response(data)
        security_headers(response)
        return response

    async def page(self, request: web.Request) -> web.Response:
        session = await self.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if session is None:
            raise web.HTTPSeeOther("/web/login")
        cookies: dict[str, str] = {}
        verified = (
            f"Verified with {session.mfa_device} in this session." if session.mfa_device else ""
        )
        return page(
            "Security keys",
            "mfa.html",
            scripts=("webauthn.js",),
            cookies=cookies,
            csrf=csrf_token(request, cookies),
            user=session.user,
            verified=verified,
        )

    async def register_begin(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        session = await self._session(request)
        options = await self.auth.mfa.begin_registration(
            session.user, passwordless=bool(body.get("passkey"))
        )
        return self._json(options)

    async def register_finish(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        session = await self._session(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise BadParameter("field 'name' (the key's name) is required")
        await self.auth.mfa.finish_registration(
            session.user, name, self._credential(body), request.remote or ""
        )
        return self._json({"message": f"Registered {name}."})

    async def verify_begin(self, request: web.Request) -> web.Response:
        await self._body(request)
        session = await self._session(request)
        return self._json(await self.auth.mfa.begin_challenge(session.user, SESSION_SCOPE))

    async def verify_finish(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        session = await self._session(request)
        verified = await self.auth.mfa.verify_challenge(
            session.user, SESSION_SCOPE, self._credential(body)
        )
        await self.sessions.mark_mfa(request.cookies[SESSION_COOKIE], verified.device_name)
        return self._json({"message": f"Verified with {verified.device_name}."})

    async def passkey_begin(self, request: web.Request) -> web.Response:
        await self._body(request)
        return self._json(await self.auth.mfa.begin_challenge(None, LOGIN_SCOPE))

    async def passkey_finish(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        remote = request.remote or ""
        try:
            verified = await self.auth.mfa.verify_challenge(
                None, LOGIN_SCOPE, self._credential(body)
            )
            user = await self.auth.users.get(verified.user)
        except (AccessDenied, NotFound) as exc:
            await self.auth.audit.emit(
                "user.login",
                outcome="failure",
                remote_addr=remote,
                method="passkey",
                reason=exc.message,
            )
            raise AccessDenied(f"passkey sign-in refused: {exc.message}") from None
        now = self.auth.clock.now()
        locked_until = user.spec.status.locked_until
        decision = await self.auth.lock_decision(
            LockTargets(user=user.name, roles=tuple(user.spec.roles))
        )
        if (locked_until and locked_until > now) or not decision.allowed:
            reason = decision.reason or "user is locked out"
            await self.auth.audit.emit(
                "user.login",
                outcome="failure",
                user=user.name,
                remote_addr=remote,
                method="passkey",
                reason=reason,
            )
            raise AccessDenied(f"sign-in refused: {reason}")
        pref = await self.auth.auth_preference()
        expires = now + pref.spec.default_session_ttl
        token = await self.sessions.create(user.name, list(user.spec.roles), expires, "passkey")
        await self.sessions.mark_mfa(token, verified.device_name)
        await self.auth.audit.emit(
            "user.login",
            user=user.name,
            remote_addr=remote,
            method="passkey",
            aaguid=verified.aaguid,
            mfa_device=verified.device_id,
        )
        response = self._json({"redirect": "/web/"})
        set_cookie(
            response,
            SESSION_COOKIE,
            token,
            max_age=int(pref.spec.default_session_ttl.total_seconds()),
            samesite="Lax",
        )
        return response


def add_webauthn_routes(app: web.Application, auth: AuthServer, sessions: WebSessions) -> None:
    pages = WebAuthnPages(auth, sessions)
    r = app.router
    r.add_get("/web/mfa", pages.page)
    r.add_post("/web/mfa/register/begin", pages.register_begin)
    r.add_post("/web/mfa/register/finish", pages.register_finish)
    r.add_post("/web/mfa/verify/begin", pages.verify_begin)
    r.add_post("/web/mfa/verify/finish", pages.verify_finish)
    r.add_post("/web/passkey/begin", pages.passkey_begin)
    r.add_post("/web/passkey/finish", pages.passkey_finish)
