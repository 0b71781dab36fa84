from __future__ import annotations

from aiohttp import web

from bastion.api.binding import bound_endpoints
from bastion.api.devices import add_device_routes
from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.contract import devices as d


def test_routes_are_bound() -> None:
    clock = FakeClock()
    auth = AuthServer(AuthDeps(MemoryBackend(clock), clock, "t.local", b"\x01" * 32))
    app = web.Application()
    add_device_routes(app, auth)
    assert d.DEVICES_LS.key in bound_endpoints(app)
    assert d.DEVICE_AUTHN_FINISH.key in bound_endpoints(app)
