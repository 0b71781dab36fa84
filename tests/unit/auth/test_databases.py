"""Tests for bastion.auth.databases: database heartbeats bound to their agent, and what a
user's roles let them see (bsh db ls)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bastion.auth.databases import DB_HEARTBEAT_MAX_TTL, DatabaseInventory, visible_to
from bastion.errors import AccessDenied
from bastion.rbac.checker import RoleSet
from bastion.testing import make_auth
from bastion.types.access import Role, RoleConditions, RoleSpec
from bastion.types.database import Database, DatabaseSpec
from bastion.types.identity import Identity
from bastion.types.meta import Metadata


def _agent(fx, host_id: str = "h1", roles: tuple[str, ...] = ("db",)) -> Identity:  # type: ignore[no-untyped-def]
    return Identity(
        cluster="test.local",
        user=host_id,
        kind="host",
        roles=roles,
        host_id=host_id,
        expires=fx.clock.now() + timedelta(days=1),
    )


def _db(name: str = "orders", labels: dict[str, str] | None = None, **spec: str) -> Database:
    return Database(
        metadata=Metadata(name=name, labels=labels or {"env": "dev"}),
        spec=DatabaseSpec(uri="db.internal:5432", **spec),  # type: ignore[arg-type]
    )


async def test_heartbeat_binds_the_name_to_the_agent_and_expires() -> None:
    fx = await make_auth()
    inventory = DatabaseInventory(fx.auth)
    db = _db(host_id="forged")
    db.metadata.expires = fx.clock.now() + timedelta(days=30)
    stored = await inventory.heartbeat(db, _agent(fx), "1.2.3.4")
    assert stored.spec.host_id == "h1"  # never what the agent claims
    assert stored.metadata.expires == fx.clock.now() + DB_HEARTBEAT_MAX_TTL
    await inventory.heartbeat(_db(), _agent(fx), "1.2.3.4")  # refresh by the same agent
    with pytest.raises(AccessDenied, match="already served by another agent"):
        await inventory.heartbeat(_db(), _agent(fx, "h2"), "5.6.7.8")
    with pytest.raises(AccessDenied, match="database agents"):
        await inventory.heartbeat(_db("x"), _agent(fx, "n1", ("node",)), "5.6.7.8")
    events = await fx.auth.audit.read_from(0, 1000)
    assert any(e.type == "db.rejected" and e.outcome == "failure" for e in events)


async def test_an_administrators_record_is_not_taken_over_by_a_heartbeat() -> None:
    fx = await make_auth()
    await fx.auth.databases.create(_db("static"))
    with pytest.raises(AccessDenied, match="created by an administrator"):
        await DatabaseInventory(fx.auth).heartbeat(_db("static"), _agent(fx), "1.2.3.4")


def _roles(*conds: RoleConditions, deny: RoleConditions | None = None) -> RoleSet:
    roles = [
        Role(metadata=Metadata(name=f"r{i}"), spec=RoleSpec(allow=c)) for i, c in enumerate(conds)
    ]
    if deny is not None:
        roles.append(Role(metadata=Metadata(name="deny"), spec=RoleSpec(deny=deny)))
    return RoleSet.from_roles(roles, {"db_users": ["alice_db"]})


def test_visible_by_db_labels_with_allowed_users_and_names() -> None:
    dba = RoleConditions(
        db_labels={"env": "dev"}, db_users=["{{internal.db_users}}"], db_names=["postgres"]
    )
    shown = visible_to(_roles(dba), _db())
    assert shown is not None
    assert shown.db_users == ("alice_db",) and shown.db_names == ("postgres",)
    assert visible_to(_roles(dba), _db(labels={"env": "prod"})) is None
    assert visible_to(_roles(RoleConditions(logins=["root"])), _db()) is None
    assert visible_to(_roles(dba, deny=RoleConditions(db_labels={"env": "dev"})), _db()) is None


async def test_visible_lists_by_name_and_filters_by_labels() -> None:
    fx = await make_auth()
    for name, env in (("b", "dev"), ("a", "dev"), ("c", "prod")):
        await fx.auth.databases.create(_db(name, {"env": env, "team": "x"}))
    roles = _roles(RoleConditions(db_labels={"*": "*"}, db_users=["*"]))
    inventory = DatabaseInventory(fx.auth)
    assert [v.database.name for v in await inventory.visible(roles)] == ["a", "b", "c"]
    assert [v.database.name for v in await inventory.visible(roles, {"env": "prod"})] == ["c"]


async def test_dynamic_labels_are_stored_with_the_heartbeat_and_matched_by_rbac() -> None:
    from bastion.types.inventory import CommandLabel

    fx = await make_auth()
    db = _db(labels={"env": "dev"})
    db.spec.dynamic_labels = {"role": CommandLabel(command=["cat", "role"], result="primary")}
    stored = await DatabaseInventory(fx.auth).heartbeat(db, _agent(fx), "1.2.3.4")
    assert stored.all_labels() == {"env": "dev", "role": "primary"}
    primary = RoleConditions(db_labels={"role": "primary"}, db_users=["alice_db"])
    replica = RoleConditions(db_labels={"role": "replica"}, db_users=["alice_db"])
    assert visible_to(_roles(primary), stored) is not None
    assert visible_to(_roles(replica), stored) is None
    assert visible_to(_roles(primary, deny=RoleConditions(db_labels={"role": "*"})), stored) is None
