from __future__ import annotations

from datetime import timedelta

from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.types.identity import Identity
from bastion.web.sessions import WebSessions


def who(clock: FakeClock, user: str, roles: list[str], ttl: timedelta) -> Identity:
    return Identity(
        cluster="c", user=user, roles=tuple(roles), expires=clock.now() + ttl, user_epoch="e1"
    )


async def test_sessions_round_trip_expire_and_delete() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock)
    sessions = WebSessions(backend, clock)
    token = await sessions.create(who(clock, "alice", ["access"], timedelta(hours=1)), "sso")
    got = await sessions.get(token)
    assert got is not None and got.user == "alice" and got.roles == ["access"]
    assert got.identity.user_epoch == "e1"  # what the gate compares with the user's epoch
    assert token not in str([i.key for i in await backend.get_range("web/")])  # hash only
    assert await sessions.get("wrong") is None and await sessions.get("") is None
    await sessions.mark_mfa(token, "yubikey")
    marked = await sessions.get(token)
    assert marked is not None and marked.mfa_device == "yubikey" and marked.user == "alice"
    await sessions.delete(token)
    assert await sessions.get(token) is None
    token = await sessions.create(who(clock, "bob", [], timedelta(minutes=1)), "password")
    clock.advance(61)
    assert await sessions.get(token) is None


async def test_fresh_mfa_proof_is_young_and_good_for_one_change() -> None:
    clock = FakeClock()
    sessions = WebSessions(MemoryBackend(clock), clock)
    window = timedelta(minutes=5)
    plain = await sessions.create(who(clock, "alice", [], timedelta(hours=1)), "password")
    assert not await sessions.consume_fresh_mfa(plain, window)  # never proven
    token = await sessions.create(
        who(clock, "alice", [], timedelta(hours=1)), "password+otp", "totp"
    )
    assert await sessions.consume_fresh_mfa(token, window)
    assert not await sessions.consume_fresh_mfa(token, window)  # used up
    await sessions.mark_mfa(token, "yubikey")  # a step-up renews it
    clock.advance(301)
    assert not await sessions.consume_fresh_mfa(token, window)  # too old
    assert not await sessions.consume_fresh_mfa("missing", window)
