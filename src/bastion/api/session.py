"""API routes of per-session MFA (:mod:`bastion.auth.session_certs`): parsing and serialising only.

``POST /v1/certs/session/challenge`` ``{"node", "login"[, "cluster"]}`` (``cluster``: a leaf of
this root, trusted clusters) ->
``{"mfa_required", "node", "login"[, "scope", "challenge"]}``

``POST /v1/certs/session`` ``{"node", "login", "public_key", "mfa_response"}`` ->
``{"ssh_cert", "tls_cert", "expires", "node", "login", ...}`` (1-minute certificates for that node
and login only).

Both need the caller's ordinary login certificate (mTLS, through the guard of
:mod:`bastion.api.app`); a per-session certificate is refused by the guard.
"""

from __future__ import annotations

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.api.devices import key_binding
from bastion.auth.session_certs import SessionCerts
from bastion.contract import mfa as m

__all__ = ["add_session_routes"]


def add_session_routes(app: web.Application, certs: SessionCerts) -> None:
    async def challenge(call: Call[m.SessionTarget]) -> m.SessionChallenge:
        guard = call.guard
        answer = await certs.challenge(
            guard.ctx.identity,
            guard.ctx.role_set,
            call.body.node,
            call.body.login,
            guard.ctx.remote_addr,
            cluster=call.body.cluster,
        )
        return m.SessionChallenge.model_validate(answer)

    async def issue(call: Call[m.SessionIssue]) -> m.SessionCerts:
        guard, b = call.guard, call.body
        issued = await certs.issue(
            guard.ctx.identity,
            guard.ctx.role_set,
            b.node,
            b.login,
            b.public_key,
            b.mfa_response,
            guard.ctx.remote_addr,
            cluster=b.cluster,
            binding=key_binding(b),  # the device ceremony, a TPM-held SSH key
        )
        ident = issued.identity
        route = ident.route
        return m.SessionCerts(
            user=ident.user,
            node=route.node if route else "",
            login=route.login if route else "",
            ssh_cert=issued.ssh_cert,
            tls_cert=issued.tls_cert,
            expires=ident.expires.isoformat(),
            scope=ident.mfa_scope,
        )

    bind(app, m.SESSION_CHALLENGE, challenge)
    bind(app, m.SESSION_CERTS, issue)
