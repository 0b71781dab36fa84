"""SCIM routes are bound for the scim audience and every error is a SCIM error document."""

from __future__ import annotations

import json

from aiohttp import web

from bastion.api.binding import bound_endpoints
from bastion.api.scim import add_scim_routes, scim_error
from bastion.contract import scim as s
from bastion.errors import AuthenticationFailed, NotFound
from bastion.testing import make_auth
from bastion.types.scim import ERROR_SCHEMA, ScimProblem


async def test_routes_are_bound() -> None:
    fx = await make_auth()
    app = web.Application()
    add_scim_routes(app, fx.auth)
    bound = bound_endpoints(app)
    assert s.SCIM_USER_PATCH.key in bound and s.SCIM_TOKEN.key in bound


def test_errors_use_the_scim_schema_and_media_type() -> None:
    reply = scim_error(ScimProblem("bad filter", 400, "invalidFilter"))
    assert reply.status == 400 and reply.content_type == s.SCIM_MEDIA_TYPE
    assert isinstance(reply.body, bytes)
    doc = json.loads(reply.body)
    assert doc == {"schemas": [ERROR_SCHEMA], "status": "400", "detail": "bad filter",
                   "scimType": "invalidFilter"}  # fmt: skip
    denied = scim_error(AuthenticationFailed("invalid SCIM bearer token"))
    assert denied.status == 401 and denied.headers["WWW-Authenticate"].startswith("Bearer")
    assert scim_error(NotFound("x")).status == 404
