"""JSON API of SSO logins for bsh (public, rate-limited; the secret is the credential).

* ``POST /v1/sso/requests`` ``{connector, public_key, ttl, secret, client_redirect}`` ->
  ``{request_id, login_path, code}``: ``login_path`` is what the browser opens on the proxy,
  ``code`` the short code a headless confirmation page shows.
* ``POST /v1/sso/requests/{id}/result`` ``{secret, code, wait}`` -> the certificates (once), or
  ``{"status": "pending"}`` after waiting up to ``wait`` seconds (long-poll).
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.api.devices import key_binding
from bastion.contract import sso as s
from bastion.errors import BastionError
from bastion.sso.requests import display_code
from bastion.sso.service import SSOService

__all__ = ["add_sso_routes"]


def add_sso_routes(app: web.Application, sso: SSOService) -> None:
    async def create(call: Call[s.SSORequest]) -> s.SSOPending:
        b = call.body
        try:
            pending = await sso.create_request(
                b.connector,
                b.public_key,
                b.ttl,
                b.secret,
                b.client_redirect,
                call.remote,
                binding=key_binding(b),  # verified when the IdP answers
            )
        except BastionError as exc:
            await sso.fail_request(b.connector, exc.message, call.remote)
            raise
        return s.SSOPending(
            request_id=pending.id,
            login_path=f"/web/sso/{quote(pending.connector)}/start?request={pending.id}",
            code=display_code(pending.id),
        )

    async def result(call: Call[s.ResultQuery]) -> s.SSOResult:
        b = call.body
        data = await sso.take_result(call.path("id"), b.secret, b.code, b.wait, call.remote)
        return s.SSOResult.model_validate(data)

    bind(app, s.SSO_REQUEST, create)
    bind(app, s.SSO_RESULT, result)
