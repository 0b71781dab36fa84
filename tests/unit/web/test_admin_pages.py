"""Every page the admin modules register has a declared audience (the gate fails closed on a
route without one), and none is public."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiohttp import web

from bastion.api.audiences import PAGE_AUDIENCES
from bastion.web.admin_pages import add_admin_routes


def test_every_admin_route_is_a_web_page() -> None:
    app = web.Application()
    auth: Any = SimpleNamespace(deps=SimpleNamespace(backend=None))
    add_admin_routes(app, auth, users=SimpleNamespace())  # type: ignore[arg-type]
    routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    assert len(routes) > 15
    for route in routes:
        assert PAGE_AUDIENCES.get(route) == "web", route
