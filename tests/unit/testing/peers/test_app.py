"""The peer app runs as a process in tests/integration/test_app_access.py; here, its routes."""

from bastion.testing.peers.app import build


def test_routes():
    app = build("https://127.0.0.1:1/.well-known/jwks.json", "", "http://a", "")
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {"/whoami", "/upload", "/stream", "/ws", "/hello"} <= paths
