"""AccessExplainer over a memory-backed auth server: check (with locks and time), ls, who."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bastion.auth.access_explain import AccessExplainer
from bastion.errors import NotFound
from bastion.testing import AuthFixture, make_auth
from bastion.types import Metadata, Node, load_resources
from bastion.types.access import Lock, LockSpec, LockTarget, User, UserSpec
from bastion.types.inventory import NodeSpec

ROLES = """
kind: role
metadata: {name: dba}
spec:
  allow:
    logins: [root]
    node_labels: {env: prod}
    where: 'request.time.getHours() >= 8 && request.time.getHours() < 18'
---
kind: role
metadata: {name: dev}
spec:
  allow: {logins: [alice], node_labels: {env: dev}}
"""
DAY = datetime(2026, 12, 7, 10, tzinfo=UTC)
NIGHT = datetime(2026, 12, 7, 22, tzinfo=UTC)


@pytest.fixture
async def fx() -> AuthFixture:
    fx = await make_auth()
    for role in load_resources(ROLES):
        await fx.auth.create_resource(role, "admin", force=False)
    for name, roles in (("alice", ["dba", "dev"]), ("bob", ["dev"])):
        await fx.auth.create_resource(
            User(metadata=Metadata(name=name), spec=UserSpec(roles=roles)), "admin", force=False
        )
    for name, env in (("db7", "prod"), ("dev1", "dev")):
        await fx.auth.nodes.create(
            Node(metadata=Metadata(name=name, labels={"env": env}), spec=NodeSpec(hostname=name))
        )
    return fx


async def test_check_explains_time_condition(fx: AuthFixture) -> None:
    explainer = AccessExplainer(fx.auth)
    day = await explainer.check("alice", "db7", "root", at=DAY)
    assert day["allowed"] and day["role"] == "dba"
    night = await explainer.check("alice", "db7", "root", at=NIGHT)
    assert not night["allowed"] and "condition not met" in night["reason"]
    assert {r["role"]: r["verdict"] for r in night["roles"]} == {
        "dba": "does not grant",
        "dev": "does not grant",
    }


async def test_check_reports_locks(fx: AuthFixture) -> None:
    await fx.auth.create_resource(
        Lock(
            metadata=Metadata(name="l1"),
            spec=LockSpec(target=LockTarget(user="alice"), message="offboarding"),
        ),
        "admin",
        force=False,
    )
    answer = await AccessExplainer(fx.auth).check("alice", "db7", "root", at=DAY)
    assert not answer["allowed"] and 'lock "l1" applies' in answer["reason"]
    assert answer["locks"][0]["message"] == "offboarding"


async def test_ls_and_who(fx: AuthFixture) -> None:
    explainer = AccessExplainer(fx.auth)
    day = await explainer.ls("alice", at=DAY)
    assert {(g["node"], g["login"]) for g in day} == {("db7", "root"), ("dev1", "alice")}
    assert {(g["node"], g["login"]) for g in await explainer.ls("alice", at=NIGHT)} == {
        ("dev1", "alice")
    }
    who = await explainer.who("dev1", "alice", at=DAY)
    assert [g["user"] for g in who] == ["alice", "bob"]
    with pytest.raises(NotFound):
        await explainer.who("nope", "root")
