"""Tests for bastion.api.db: the database endpoints are bound with their contract."""

from __future__ import annotations

from aiohttp import web

from bastion.api.binding import bound_endpoints
from bastion.api.db import add_db_routes
from bastion.contract import db as c
from bastion.testing import make_auth


async def test_routes_bound() -> None:
    fx = await make_auth()
    app = web.Application()
    add_db_routes(app, fx.auth)
    bound = bound_endpoints(app)
    for endpoint in (c.DB_USER_CERT, c.DB_SERVER_CERT, c.DB_AGENT_CERT):
        assert bound[endpoint.key] is endpoint
    assert c.DB_AGENT_CERT.audience == "host" and c.DB_USER_CERT.audience == "user"


async def test_inventory_routes_bound() -> None:
    fx = await make_auth()
    app = web.Application()
    add_db_routes(app, fx.auth)
    bound = bound_endpoints(app)
    assert bound[c.DB_HEARTBEAT.key] is c.DB_HEARTBEAT and c.DB_HEARTBEAT.audience == "host"
    assert bound[c.DB_LIST.key] is c.DB_LIST and c.DB_LIST.audience == "user"
