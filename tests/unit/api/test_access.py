"""The access routes' parameters (the routes run end to end in tests/integration/test_policy.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bastion.api.access import parse_at
from bastion.api.app import build_app
from bastion.api.audiences import audience_of
from bastion.contract.access import ACCESS_CHECK, ACCESS_LS, ACCESS_WHO
from bastion.errors import BadParameter
from bastion.testing import make_auth


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("2026-12-07T22:00:00Z", datetime(2026, 12, 7, 22, tzinfo=UTC)),
        ("2026-12-07T22:00:00", datetime(2026, 12, 7, 22, tzinfo=UTC)),
        (
            "2026-12-07T22:00:00+01:00",
            datetime(2026, 12, 7, 22, tzinfo=timezone(timedelta(hours=1))),
        ),
    ],
)
def test_parse_at(text: str, expected: datetime | None) -> None:
    assert parse_at(text) == expected


def test_parse_at_refuses_garbage() -> None:
    with pytest.raises(BadParameter, match="ISO 8601"):
        parse_at("yesterday")


async def test_routes_registered_for_people() -> None:
    fx = await make_auth()
    app = build_app(fx.auth, rate=100.0, burst=100, max_body=1 << 20)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    for endpoint in (ACCESS_CHECK, ACCESS_LS, ACCESS_WHO):
        assert endpoint.path in paths
        assert audience_of("GET", endpoint.path) == "user"
