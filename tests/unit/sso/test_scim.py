"""The SCIM directory: records, tokens, and the revocations committed with each change."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from bastion.audit.log import PREFIX, index_of_key
from bastion.audit.state import LatestWrites, events_without_state, unaudited_state
from bastion.auth.scim import ScimTokens, deprovision_lock_name
from bastion.backend.base import Op
from bastion.backend.memory import MemoryBackend
from bastion.errors import AuthenticationFailed, ConnectionProblem, NotFound
from bastion.locks.matcher import LockTargets
from bastion.sso.scim import ScimDirectory
from bastion.testing import AuthFixture, make_auth
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.connectors import OIDCConnector
from bastion.types.meta import Metadata
from bastion.types.scim import GROUP_SCHEMA, PATCH_SCHEMA, USER_SCHEMA, ScimProblem

C = "okta"


async def _world() -> tuple[AuthFixture, ScimDirectory]:
    fx = await make_auth()
    connector = OIDCConnector.model_validate(
        {
            "metadata": {"name": C},
            "spec": {
                "issuer_url": "https://idp.example.com",
                "client_id": "x",
                "claims_to_roles": [
                    {"claim": "groups", "value": "^team-(.*)$", "roles": ["$1"]},
                    {"claim": "groups", "value": "everyone", "roles": ["access"]},
                ],
            },
        }
    )
    await fx.auth.create_resource(connector, "admin", force=False)
    return fx, ScimDirectory(fx.auth)


def _user(name: str, **extra: Any) -> dict[str, Any]:
    return {"schemas": [USER_SCHEMA], "userName": name, **extra}


def _patch(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": list(ops)}


async def _denied(fx: AuthFixture, user: str, epoch: str = "") -> bool:
    decision = await fx.auth.lock_decision(LockTargets(user=f"{C}:{user}", user_epoch=epoch))
    return not decision.allowed


async def _check_audited(backend: MemoryBackend) -> None:
    latest = LatestWrites()
    for item in await backend.get_range(PREFIX):
        index = index_of_key(item.key)
        assert index is not None
        latest.feed(index, item.value)
    _, findings = await unaudited_state(backend, latest)
    assert not findings, [f.message for f in findings]
    assert await events_without_state(backend, latest) == []


async def test_tokens_are_hashed_per_connector_and_rotate() -> None:
    fx, _ = await _world()
    tokens = ScimTokens(fx.auth)
    token = await tokens.create(C, "admin")
    assert await tokens.authenticate(f"Bearer {token}") == C
    stored = await tokens.store.get(C)
    assert token not in stored.model_dump_json()
    for bad in ("", "Bearer", f"Basic {token}", f"Bearer {token}x", "Bearer other.x", "Bearer x"):
        with pytest.raises(AuthenticationFailed):
            await tokens.authenticate(bad)
    newer = await tokens.create(C, "admin")
    with pytest.raises(AuthenticationFailed):
        await tokens.authenticate(f"Bearer {token}")
    assert await tokens.authenticate(f"bearer {newer}") == C
    with pytest.raises(NotFound):
        await tokens.create("nope", "admin")


async def test_users_filter_page_and_stay_unique() -> None:
    fx, d = await _world()
    for i in range(5):
        await d.create_user(C, _user(f"u{i}@example.com", displayName=f"User {i}"))
    with pytest.raises(ScimProblem) as err:
        await d.create_user(C, _user("U1@example.com"))
    assert (err.value.status, err.value.scim_type) == (409, "uniqueness")
    page = await d.list_users(C, 'userName eq "u3@example.com"', 1, 100)
    assert page.total == 1 and page.resources[0]["displayName"] == "User 3"
    page = await d.list_users(C, "", 2, 2)
    assert (page.total, page.start, len(page.resources)) == (5, 2, 2)
    names = [
        r["userName"]
        for start in (1, 3, 5)
        for r in (await d.list_users(C, "", start, 2)).resources
    ]
    assert sorted(names) == [f"u{i}@example.com" for i in range(5)]  # stable pages, no overlap
    assert (await d.list_users("other", "", 1, 10)).total == 0
    with pytest.raises(ScimProblem) as err:
        await d.list_users(C, "userName eq", 1, 10)
    assert err.value.scim_type == "invalidFilter"


async def test_deactivation_locks_and_reactivation_lifts_only_its_lock() -> None:
    fx, d = await _world()
    user = await d.create_user(C, _user("alice"))
    assert not await _denied(fx, "alice")
    await d.patch_user(C, user.name, _patch({"op": "replace", "value": {"active": False}}), "")
    assert await _denied(fx, "alice")
    overlay = await d.login_overlay(C, "ALICE")
    assert overlay is not None and overlay.active is False
    admin = Lock(metadata=Metadata(name="by-admin"), spec=LockSpec(target=LockTarget(user="x")))
    await fx.auth.create_resource(admin, "admin", force=False)
    await d.patch_user(C, user.name, _patch({"op": "replace", "path": "active", "value": True}), "")
    assert not await _denied(fx, "alice")
    assert {lock.name for lock in await fx.auth.locks.list()} == {"by-admin"}
    await _check_audited(fx.backend)


async def test_an_admin_lock_under_scims_name_is_not_lifted() -> None:
    fx, d = await _world()
    user = await d.create_user(C, _user("bob", active=False))
    assert await _denied(fx, "bob")  # provisioned inactive: locked from the start
    lock = await fx.auth.locks.get(deprovision_lock_name(C, "bob"))
    lock.spec.created_by = "admin"
    await fx.auth.update_resource(lock, "admin")
    await d.replace_user(C, user.name, _user("bob", active=True), "")
    assert await _denied(fx, "bob")


async def test_deletion_locks_until_certificates_expire() -> None:
    fx, d = await _world()
    user = await d.create_user(C, _user("carol"))
    await d.delete_user(C, user.name, "")
    lock = await fx.auth.locks.get(deprovision_lock_name(C, "carol"))
    assert lock.metadata.expires is not None and lock.metadata.expires > fx.clock.now()
    with pytest.raises(ScimProblem) as err:
        await d.user(C, user.name)
    assert err.value.status == 404
    again = await d.create_user(C, _user("carol"))  # re-provisioned: the lock is lifted
    assert again.name != user.name and not await _denied(fx, "carol")


async def test_etag_mismatch_is_412() -> None:
    fx, d = await _world()
    user = await d.create_user(C, _user("dave"))
    stale = f'W/"{user.metadata.revision}"'
    await d.patch_user(C, user.name, _patch({"op": "add", "path": "title", "value": "x"}), stale)
    with pytest.raises(ScimProblem) as err:
        await d.patch_user(
            C, user.name, _patch({"op": "replace", "value": {"active": False}}), stale
        )
    assert err.value.status == 412
    assert not await _denied(fx, "dave")
    await d.delete_user(C, user.name, "*")


async def test_a_group_change_that_drops_a_role_revokes_the_epoch() -> None:
    fx, d = await _world()
    alice = await d.create_user(C, _user("alice"))
    bob = await d.create_user(C, _user("bob"))
    members = [{"value": alice.name}, {"value": bob.name}]
    dev = await d.create_group(
        C, {"schemas": [GROUP_SCHEMA], "displayName": "team-dev", "members": members}
    )
    everyone = await d.create_group(C, {"displayName": "everyone", "members": members[:1]})
    overlay = await d.login_overlay(C, "alice")
    assert overlay is not None and sorted(overlay.groups) == ["everyone", "team-dev"]
    old = alice.spec.epoch
    remove = _patch({"op": "remove", "path": f'members[value eq "{alice.name}"]'})
    await d.patch_group(C, dev.name, remove, "")
    now = await d.user(C, alice.name)
    assert now.spec.epoch != old
    assert await _denied(fx, "alice", old) and not await _denied(fx, "alice", now.spec.epoch)
    assert (await d.user(C, bob.name)).spec.epoch == bob.spec.epoch  # bob kept his roles
    # A rename of a group whose name maps to no role drops nothing.
    await d.patch_group(C, dev.name, _patch({"op": "add", "path": "members",
                                             "value": [{"value": alice.name}]}), "")  # fmt: skip
    before = (await d.user(C, alice.name)).spec.epoch
    await d.delete_group(C, everyone.name, "")  # alice loses "access"
    assert (await d.user(C, alice.name)).spec.epoch != before
    with pytest.raises(ScimProblem):
        await d.create_group(C, {"displayName": "x", "members": [{"value": "ghost"}]})
    await _check_audited(fx.backend)


class _Failing(MemoryBackend):
    fail = False

    async def commit(self, ops: Sequence[Op]) -> Any:
        if self.fail:
            raise ConnectionProblem("injected")
        return await super().commit(ops)


async def test_a_failed_commit_stores_neither_record_nor_lock() -> None:
    fx, d = await _world()
    user = await d.create_user(C, _user("erin"))
    fx.backend.__class__ = _Failing
    _Failing.fail = True
    try:
        with pytest.raises(ConnectionProblem):
            await d.patch_user(
                C, user.name, _patch({"op": "replace", "path": "active", "value": False}), ""
            )
    finally:
        _Failing.fail = False
    assert (await d.user(C, user.name)).spec.active and not await _denied(fx, "erin")
    await _check_audited(fx.backend)


async def test_user_name_index_is_written_with_the_user_and_never_scans() -> None:
    fx, directory = await _world()
    alice = await directory.create_user(C, _user("Alice"))
    listed = 0
    real_list = directory.users.list

    async def counting_list(*args: Any, **kwargs: Any) -> Any:
        nonlocal listed
        listed += 1
        return await real_list(*args, **kwargs)

    directory.users.list = counting_list  # type: ignore[method-assign]
    with pytest.raises(ScimProblem) as err:
        await directory.create_user(C, _user("alice"))
    assert err.value.status == 409 and err.value.scim_type == "uniqueness"
    page = await directory.list_users(C, 'userName eq "ALICE"', 1, 10)
    assert [d["id"] for d in page.resources] == [alice.name]
    assert (await directory.list_users(C, 'userName eq "nobody"', 1, 10)).total == 0
    overlay = await directory.login_overlay(C, "alice")
    assert overlay is not None and overlay.active
    renamed = await directory.patch_user(
        C, alice.name, _patch({"op": "replace", "path": "userName", "value": "alice2"}), ""
    )
    assert renamed.spec.user_name == "alice2"
    assert await directory.user_by_name(C, "alice") is None
    assert (await directory.user_by_name(C, "ALICE2")) is not None
    await directory.create_user(C, _user("alice"))  # the old name is free again
    await directory.delete_user(C, alice.name, "")
    assert await directory.user_by_name(C, "alice2") is None
    assert listed == 0, "creates and userName lookups read the index, not the user list"
    assert isinstance(fx.backend, MemoryBackend)
    await _check_audited(fx.backend)


async def test_users_stored_before_the_index_are_indexed_once() -> None:
    fx, directory = await _world()
    await directory.create_user(C, _user("bob"))
    backend = fx.auth.deps.backend
    for item in await backend.get_range("scim/index/"):
        await backend.delete(item.key)
    fresh = ScimDirectory(fx.auth)
    with pytest.raises(ScimProblem):
        await fresh.create_user(C, _user("BOB"))
    assert await fresh.user_by_name(C, "bob") is not None


async def test_admin_removal_of_an_sso_user_locks_them_with_its_event() -> None:
    """`bctl users rm okta:carol`: an SSO user has no record; the removal is a lock on the user
    (live sessions end, new certificates refused) committed with its audit event."""
    fx, _ = await _world()
    assert not await _denied(fx, "carol")
    await fx.auth.delete_resource("user", f"{C}:carol", "admin")
    assert await _denied(fx, "carol")
    assert not await _denied(fx, "dave")
    await _check_audited(fx.backend)
    with pytest.raises(NotFound):  # an unknown connector is not an SSO user
        await fx.auth.delete_resource("user", "nope:carol", "admin")
    with pytest.raises(NotFound):
        await fx.auth.delete_resource("user", "plainname", "admin")
    fx.clock.advance(timedelta(hours=13))  # every earlier certificate has expired
    assert not await _denied(fx, "carol")
