"""Live-session trackers in auth: a node writes only its own; users see what they may join."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bastion.auth.sessions import InProcessTrackers, SessionTrackerService
from bastion.errors import AccessDenied, NotFound
from bastion.testing import make_auth
from bastion.types.access import Role
from bastion.types.identity import Identity
from bastion.types.meta import Metadata
from bastion.types.sessions import SessionTracker, SessionTrackerSpec

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def host(host_id: str) -> Identity:
    return Identity(cluster="test.local", user=host_id, kind="host", roles=("node",),
                    host_id=host_id, expires=EXPIRES)  # fmt: skip


def user(name: str, *roles: str) -> Identity:
    return Identity(cluster="test.local", user=name, roles=roles, expires=EXPIRES)


def tracker(sid: str, host_id: str = "h1", owner: str = "alice") -> SessionTracker:
    return SessionTracker(
        metadata=Metadata(name=sid),
        spec=SessionTrackerSpec(node="web1", host_id=host_id, owner=owner, owner_roles=["prod"]),
    )


async def test_nodes_report_their_own_and_users_see_what_they_may_join() -> None:
    fx = await make_auth()
    await fx.auth.roles.upsert(
        Role.model_validate({"metadata": {"name": "auditor"}, "spec": {"allow": {
            "join_sessions": [{"roles": ["prod"], "modes": ["moderator"]}]}}})
    )  # fmt: skip
    service = SessionTrackerService(fx.auth)
    await InProcessTrackers(service, host("h1")).report(tracker("s1"))
    with pytest.raises(AccessDenied):
        await service.report(host("h2"), tracker("s1", host_id="h2"))  # another host's id
    with pytest.raises(AccessDenied):
        await service.report(host("h2"), tracker("s2", host_id="h1"))
    with pytest.raises(AccessDenied):
        await service.report(user("alice"), tracker("s3"))
    stored = await service.store.get("s1")
    assert stored.metadata.expires is not None
    assert stored.metadata.expires <= fx.clock.now() + timedelta(minutes=5)
    [(seen, modes)] = await service.list(user("bob", "auditor"))
    assert seen.name == "s1" and modes == ("moderator",)
    assert [t.name for t, _ in await service.list(user("alice"))] == ["s1"]  # the owner
    assert await service.list(user("carl")) == []
    with pytest.raises(NotFound):
        await service.get(user("carl"), "s1")
    with pytest.raises(AccessDenied):
        await service.forget(host("h2"), "s1")
    await service.forget(host("h1"), "s1")
    await service.forget(host("h1"), "s1")  # gone already: fine
    assert await service.list(user("alice")) == []
