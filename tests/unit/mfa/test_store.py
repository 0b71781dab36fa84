from datetime import UTC, datetime, timedelta

import pytest

from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.errors import AlreadyExists, NotFound
from bastion.mfa.store import Challenge, ChallengeStore, DeviceStore
from bastion.types.mfa import MFADevice

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def device(name="k", cred="Y3JlZA"):
    return MFADevice(
        id=f"id-{name}", user="alice", name=name, type="webauthn", added=NOW, credential_id=cred
    )


async def test_devices_by_name_and_credential():
    store = DeviceStore(MemoryBackend(FakeClock()))
    await store.add(device())
    assert (await store.by_credential("Y3JlZA")).name == "k"
    assert (await store.by_name("alice", "k")).id == "id-k"
    with pytest.raises(AlreadyExists):
        await store.add(device(cred="b3RoZXI"))
    await store.remove(device())
    with pytest.raises(NotFound):
        await store.by_credential("Y3JlZA")


async def test_user_handle_is_stable_random_and_reversible():
    store = DeviceStore(MemoryBackend(FakeClock()))
    handle = await store.user_handle("alice")
    assert handle == await store.user_handle("alice") != await store.user_handle("bob")
    assert await store.user_of_handle(handle) == "alice"
    await store.forget_user("alice")
    with pytest.raises(NotFound):
        await store.user_of_handle(handle)


async def test_challenges_are_single_use_and_expire():
    clock = FakeClock()
    store = ChallengeStore(MemoryBackend(clock))
    expires = clock.now() + timedelta(minutes=2)
    await store.put(Challenge("abc", "alice", "login", "assert", expires))
    taken = await store.take("abc")
    assert (taken.user, taken.scope, taken.kind) == ("alice", "login", "assert")
    with pytest.raises(NotFound):
        await store.take("abc")
    await store.put(Challenge("def", "", "login", "assert", expires))
    clock.advance(timedelta(minutes=3))
    with pytest.raises(NotFound):
        await store.take("def")


async def test_device_count_is_bounded():
    from bastion.errors import LimitExceeded
    from bastion.mfa.store import MAX_DEVICES

    store = DeviceStore(MemoryBackend(FakeClock()))
    for i in range(MAX_DEVICES):
        await store.add(device(name=f"k{i}", cred=f"Y3{i}"))
    with pytest.raises(LimitExceeded, match="remove one"):
        await store.add(device(name="one-more", cred="bW9yZQ"))


async def test_a_user_name_that_extends_another_does_not_share_its_devices():
    """Security review: SSO user names come from IdP claims and may contain ``/`` (a SAML
    persistent NameID, say), so ``oidc:bob/x``'s devices sat under ``mfa_devices/oidc:bob/``:
    they counted as bob's (admin MFA asked bob for a key he does not have) and bob could
    remove them."""
    store = DeviceStore(MemoryBackend(FakeClock()))
    bob = device(name="bobkey", cred="Ym9i").model_copy(update={"user": "oidc:bob"})
    other = MFADevice(
        id="x", user="oidc:bob/x", name="evil", type="webauthn", added=NOW, credential_id="ZXZpbA"
    )
    await store.add(bob)
    await store.add(other)
    assert [d.name for d in await store.list("oidc:bob")] == ["bobkey"]
    assert [d.name for d in await store.list("oidc:bob/x")] == ["evil"]
    with pytest.raises(NotFound):
        await store.by_name("oidc:bob", "evil")


async def test_counter_advances_atomically_and_a_repeat_is_a_regression(tmp_path):
    """Two assertions with the same counter (a cloned key used twice at once): exactly one
    wins, on a backend where the two really interleave (SQLite's writer thread)."""
    import asyncio

    from bastion.backend.sqlite import SQLiteBackend

    backend = await SQLiteBackend.open(str(tmp_path / "b.db"), FakeClock())
    try:
        store = DeviceStore(backend)
        key = await store.add(device())
        assert (await store.advance_counter(key, 5, NOW, resident=False)).sign_count == 5
        results = await asyncio.gather(
            *(store.advance_counter(key, 6, NOW, resident=True) for _ in range(4))
        )
        assert sum(r is not None for r in results) == 1
        assert await store.advance_counter(key, 6, NOW, resident=False) is None  # not above 6
        assert await store.advance_counter(key, 3, NOW, resident=False) is None  # went back
        stored = await store.get("alice", key.id)
        assert stored.sign_count == 6 and stored.resident
        counterless = await store.add(device("c", cred="Yw"))  # keys without a counter: 0 always
        assert await store.advance_counter(counterless, 0, NOW, resident=False) is not None
        assert await store.advance_counter(counterless, 0, NOW, resident=False) is not None
    finally:
        await backend.close()
