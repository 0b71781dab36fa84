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


def test_the_login_proof_is_handed_to_the_login() -> None:
    """``Login.device`` becomes the auth layer's proof (users.login verifies it before the
    one issuance: tests/unit/auth/test_users.py)."""
    from bastion.api.devices import login_proof
    from bastion.contract.core import DeviceProof

    assert login_proof(None) is None
    proof = DeviceProof(device_id="d1", challenge="dc1.x.y", signature="c2ln", profile={"a": "b"})
    got = login_proof(proof)
    assert got is not None
    assert (got.device_id, got.challenge, got.signature, got.profile) == (
        "d1",
        "dc1.x.y",
        "c2ln",
        {"a": "b"},
    )
