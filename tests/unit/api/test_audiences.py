"""Every route of the auth/proxy web app declares who it is for (the gate's route table)."""

from __future__ import annotations

from pathlib import Path

from bastion.api.app import build_app
from bastion.api.audiences import ROUTE_AUDIENCES, audience_of
from bastion.recording.store import LocalRecordingStore
from bastion.testing import make_auth


async def _routes(tmp: Path) -> set[tuple[str, str]]:
    """Every route of a fully configured app (recordings on: their routes exist only then)."""
    fx = await make_auth(recordings=LocalRecordingStore(tmp))
    app = build_app(fx.auth, rate=100.0, burst=100, max_body=1 << 20)
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


async def test_every_registered_route_has_a_declared_audience(tmp_path: Path) -> None:
    missing = [r for r in sorted(await _routes(tmp_path)) if audience_of(*r) is None]
    assert not missing, f"declare these routes in bastion.api.audiences: {missing}"


async def test_the_table_names_no_route_that_does_not_exist(tmp_path: Path) -> None:
    """A stale entry would hide a renamed route's missing declaration."""
    assert set(ROUTE_AUDIENCES) - await _routes(tmp_path) == set()


def test_head_is_answered_like_get_and_unmatched_paths_need_an_identity() -> None:
    assert audience_of("HEAD", "/v1/whoami") == audience_of("GET", "/v1/whoami") == "any"
    assert audience_of("GET", None) == "any"
    assert audience_of("DELETE", "/v1/whoami") is None
