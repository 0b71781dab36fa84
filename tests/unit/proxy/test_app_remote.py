"""The app route's backend on a proxy in its own process: what it asks of auth and caches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bastion.contract import apps as c
from bastion.contract.base import Empty
from bastion.errors import AccessDenied
from bastion.proxy.app_remote import RemoteApps
from bastion.types.apps import App, AppSpec
from bastion.types.codec import resource_to_dict
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

ALICE = Identity(
    cluster="c", user="alice", roles=("apps",), expires=datetime(2030, 1, 1, tzinfo=UTC)
)
GRAFANA = App(metadata=Metadata(name="grafana"), spec=AppSpec(uri="http://10.0.0.5:3000"))


class FakeAuth:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def send(self, endpoint: Any, body: Any = None) -> Any:
        self.calls.append((endpoint.path, body))
        if endpoint is c.APP_AUTHORIZE:
            return c.AppAuthorized(app=resource_to_dict(GRAFANA), jwt=f"jwt{len(self.calls)}")
        if endpoint is c.APP_SESSION_END:
            return Empty()
        if body.code == "bad" or body.token == "gone":
            return c.AppSessionFound(found=False)
        return c.AppSessionFound(
            found=True,
            token=body.token or "new-token",
            id="s1",
            identity=ALICE.model_dump(mode="json"),
            expires=datetime(2030, 1, 1, tzinfo=UTC) - timedelta(hours=1),
        )


async def test_sessions_are_looked_up_once_a_second_and_codes_redeemed() -> None:
    auth = FakeAuth()
    apps = RemoteApps(auth)
    token, session = await apps.sessions.redeem("code", "grafana")
    assert token == "new-token" and session.identity == ALICE and session.id == "s1"
    with pytest.raises(AccessDenied):
        await apps.sessions.redeem("bad", "grafana")
    first = await apps.sessions.get("tok", "grafana")
    again = await apps.sessions.get("tok", "grafana")  # cached (SESSION_TTL)
    assert first == again and first is not None and first.identity.user == "alice"
    assert await apps.sessions.get("gone", "grafana") is None
    assert await apps.sessions.get("", "grafana") is None  # never asked
    lookups = [b for path, b in auth.calls if path == c.APP_SESSION.path]
    assert len(lookups) == 4
    await apps.sessions.end("tok")
    assert auth.calls[-1][0] == c.APP_SESSION_END.path


async def test_authorize_brings_the_assertion_that_is_reused_briefly() -> None:
    auth = FakeAuth()
    apps = RemoteApps(auth)
    app = await apps.authorize(ALICE, "grafana")
    assert app == GRAFANA
    sent = auth.calls[0][1]
    assert sent.app == "grafana" and Identity.model_validate(sent.identity) == ALICE
    assert await apps.assertion(ALICE, app) == "jwt1"  # the admission's own: no second call
    assert len(auth.calls) == 1
