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

from bastion.errors import BadParameter, BastionError
from bastion.sso.requests import display_code
from bastion.sso.service import SSOService
from bastion.types.duration import parse_duration
from bastion.web.body import read_json

__all__ = ["PUBLIC_PREFIX", "add_sso_routes"]

PUBLIC_PREFIX = "/v1/sso/"


def _text(body: dict[str, object], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise BadParameter(f"field {name!r} is required and must be a string")
    return value


def add_sso_routes(app: web.Application, sso: SSOService) -> None:
    async def create(request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            ttl = parse_duration(_text(body, "ttl", "12h"))
        except ValueError as exc:
            raise BadParameter(f"field 'ttl': {exc}") from None
        connector = _text(body, "connector")
        try:
            pending = await sso.create_request(
                connector,
                _text(body, "public_key"),
                ttl,
                _text(body, "secret"),
                _text(body, "client_redirect", ""),
                request.remote or "",
            )
        except BastionError as exc:
            await sso.fail_request(connector, exc.message, request.remote or "")
            raise
        return web.json_response(
            {
                "request_id": pending.id,
                "login_path": f"/web/sso/{quote(pending.connector)}/start?request={pending.id}",
                "code": display_code(pending.id),
            },
            status=201,
        )

    async def result(request: web.Request) -> web.Response:
        body = await read_json(request)
        wait = body.get("wait", 0)
        if not isinstance(wait, int | float):
            raise BadParameter("field 'wait' must be a number of seconds")
        data = await sso.take_result(
            request.match_info["id"],
            _text(body, "secret"),
            _text(body, "code", ""),
            float(wait),
            request.remote or "",
        )
        return web.json_response(data)

    app.router.add_post("/v1/sso/requests", create)
    app.router.add_post("/v1/sso/requests/{id}/result", result)
