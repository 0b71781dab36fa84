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
* ``POST /web/login/key/begin|finish``: password plus a security key as second factor.

Sign-ins go through :class:`~bastion.auth.users.UserService` (``begin_login``, ``login`` with
the assertion, ``login_passwordless``), exactly like ``bsh login``: same lockout, locks, audit.

Every POST needs the CSRF token in ``X-CSRF-Token``; errors are the API's JSON error shape.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.auth.issuer import UserCerts
from bastion.auth.server import AuthServer
from bastion.auth.users import UserService
from bastion.errors import AccessDenied, AuthenticationFailed, BadParameter
from bastion.web.body import read_json
from bastion.web.pages import WEBAUTHN_SCRIPTS, page
from bastion.web.security import check_csrf, csrf_token, security_headers, set_cookie
from bastion.web.sessions import SESSION_COOKIE, WebSession, WebSessions, current_session

__all__ = ["SESSION_SCOPE", "add_webauthn_routes"]

SESSION_SCOPE = "web:session"
LOGIN_SCOPE = "login"
WEB_TTL = timedelta(hours=12)
FRESH_MFA = timedelta(minutes=5)
"""How recent a second-factor proof must be to add a device in the browser (used up by it)."""
_CONFIRM_FIRST = (
    "confirm with one of your existing devices first: press Verify (or sign in again), then "
    "register within 5 minutes; each confirmation is good for one new device"
)
"""Longest browser session (the roles' max_session_ttl may cut it shorter)."""


def ephemeral_public_key() -> str:
    """A throwaway key: browser sign-ins go through the same login as bsh, which certifies a key;
    the certificate only tells the session who signed in, until when, with which device."""
    key = ed25519.Ed25519PrivateKey.generate()
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


class WebAuthnPages:
    def __init__(self, auth: AuthServer, users: UserService, sessions: WebSessions) -> None:
        self.auth = auth
        self.users = users
        self.sessions = sessions

    async def _session(self, request: web.Request) -> WebSession:
        session = current_session(request)
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
        session = current_session(request)
        if session is None:
            raise web.HTTPSeeOther("/web/login")
        cookies: dict[str, str] = {}
        verified = ""
        if session.mfa_device:
            device = await self._describe_device(session.user, session.mfa_device)
            verified = f"Verified with your {device} in this session."
        return page(
            "Security keys",
            "mfa.html",
            scripts=WEBAUTHN_SCRIPTS,
            cookies=cookies,
            csrf=csrf_token(request, cookies),
            user=session.user,
            verified=verified,
        )

    async def _describe_device(self, user: str, ref: str) -> str:
        """The kind and name of the device ``ref`` (the session holds its id or its name)."""
        for device in await self.auth.mfa.list_devices(user):
            if ref in (device.id, device.name):
                return device.describe()
        return "second factor"  # removed since: never show a raw id

    async def _require_fresh_mfa(self, session: WebSession) -> None:
        """Users with a device prove it again (sign-in or Verify) just before adding another."""
        if not await self.auth.mfa.list_devices(session.user):
            return  # the first device
        at = session.mfa_at
        if at is None or self.auth.clock.now() - at > FRESH_MFA:
            raise AccessDenied(_CONFIRM_FIRST)

    async def register_begin(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        session = await self._session(request)
        await self._require_fresh_mfa(session)
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
        if await self.auth.mfa.list_devices(session.user) and not (
            await self.sessions.consume_fresh_mfa(request.cookies[SESSION_COOKIE], FRESH_MFA)
        ):
            raise AccessDenied(_CONFIRM_FIRST)
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
        device = await self._describe_device(session.user, verified.device_id)
        return self._json({"message": f"Verified with your {device}."})

    async def passkey_begin(self, request: web.Request) -> web.Response:
        await self._body(request)
        return self._json(await self.auth.mfa.begin_challenge(None, LOGIN_SCOPE))

    async def passkey_finish(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        certs = await self.users.login_passwordless(
            self._credential(body), ephemeral_public_key(), WEB_TTL, request.remote or ""
        )
        return await self._signed_in(certs, "passkey")

    async def key_begin(self, request: web.Request) -> web.Response:
        """Password first; the answer is the WebAuthn options for the user's keys."""
        body = await self._body(request)
        challenge = await self.users.begin_login(
            _text(body, "user"), _text(body, "password"), request.remote or ""
        )
        if challenge.webauthn is None:
            raise AccessDenied(
                "no security key is registered for this account: use the authenticator code"
            )
        return self._json(challenge.webauthn)

    async def key_finish(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        certs = await self.users.login(
            _text(body, "user"),
            _text(body, "password"),
            "",
            ephemeral_public_key(),
            WEB_TTL,
            request.remote or "",
            webauthn=self._credential(body),
        )
        return await self._signed_in(certs, "password+webauthn")

    async def _signed_in(self, certs: UserCerts, method: str) -> web.Response:
        identity = certs.identity
        device = ""
        if identity.mfa_device:
            devices = await self.auth.mfa.list_devices(identity.user)
            names = [d.name for d in devices if d.id == identity.mfa_device]
            device = names[0] if names else identity.mfa_device
        token = await self.sessions.create(identity, method, device)
        response = self._json({"redirect": "/web/"})
        max_age = int((identity.expires - self.auth.clock.now()).total_seconds())
        set_cookie(response, SESSION_COOKIE, token, max_age=max_age, samesite="Lax")
        return response


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadParameter(f"field {name!r} is required")
    return value


def add_webauthn_routes(
    app: web.Application, auth: AuthServer, users: UserService, sessions: WebSessions
) -> None:
    pages = WebAuthnPages(auth, users, sessions)
    r = app.router
    r.add_get("/web/mfa", pages.page)
    r.add_post("/web/mfa/register/begin", pages.register_begin)
    r.add_post("/web/mfa/register/finish", pages.register_finish)
    r.add_post("/web/mfa/verify/begin", pages.verify_begin)
    r.add_post("/web/mfa/verify/finish", pages.verify_finish)
    r.add_post("/web/passkey/begin", pages.passkey_begin)
    r.add_post("/web/passkey/finish", pages.passkey_finish)
    r.add_post("/web/login/key/begin", pages.key_begin)
    r.add_post("/web/login/key/finish", pages.key_finish)
