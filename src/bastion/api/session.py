"""API routes of per-session MFA (:mod:`bastion.auth.session_certs`): parsing and serialising only.

``POST /v1/certs/session/challenge`` ``{"node", "login"}`` ->
``{"mfa_required", "node", "login"[, "scope", "challenge"]}``

``POST /v1/certs/session`` ``{"node", "login", "public_key", "mfa_response"}`` ->
``{"ssh_cert", "tls_cert", "expires", "node", "login", ...}`` (1-minute certificates for that node
and login only).

Both need the caller's ordinary login certificate (mTLS, through the guard of
:mod:`bastion.api.app`); a per-session certificate is refused by the guard.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bastion.auth.guarded import GuardedAuth
from bastion.auth.session_certs import SessionCerts
from bastion.errors import BadParameter
from bastion.web.body import read_json

__all__ = ["add_session_routes"]

MAX_FIELD = 256


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
        raise BadParameter(f"field {name!r} is required: a string of 1 to {MAX_FIELD} characters")
    return value


def add_session_routes(app: web.Application, certs: SessionCerts) -> None:
    async def challenge(request: web.Request) -> web.Response:
        guard: GuardedAuth = request["guard"]
        body = await read_json(request)
        answer = await certs.challenge(
            guard.ctx.identity,
            guard.ctx.role_set,
            _field(body, "node"),
            _field(body, "login"),
            guard.ctx.remote_addr,
        )
        return web.json_response(answer)

    async def issue(request: web.Request) -> web.Response:
        guard: GuardedAuth = request["guard"]
        body = await read_json(request)
        response = body.get("mfa_response")
        if not isinstance(response, dict):
            raise BadParameter("field 'mfa_response' must be the WebAuthn assertion (an object)")
        public_key = body.get("public_key")
        if not isinstance(public_key, str) or not public_key:
            raise BadParameter("field 'public_key' is required (OpenSSH line or PEM)")
        issued = await certs.issue(
            guard.ctx.identity,
            guard.ctx.role_set,
            _field(body, "node"),
            _field(body, "login"),
            public_key,
            response,
            guard.ctx.remote_addr,
        )
        ident = issued.identity
        route = ident.route
        return web.json_response(
            {
                "user": ident.user,
                "node": route.node if route else "",
                "login": route.login if route else "",
                "ssh_cert": issued.ssh_cert,
                "tls_cert": issued.tls_cert,
                "expires": ident.expires.isoformat(),
                "scope": ident.mfa_scope,
            }
        )

    app.router.add_post("/v1/certs/session/challenge", challenge)
    app.router.add_post("/v1/certs/session", issue)
