import asyncio
from datetime import timedelta

import pytest

from bastion.backend.base import Item
from bastion.backend.memory import MemoryBackend
from bastion.errors import AccessDenied
from bastion.services.app_sessions import PREFIX, AppSessions
from bastion.testing import FakeClock
from bastion.types.identity import Identity


async def _setup():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    await backend.create(Item(key="web/sessions/abc", value=b"{}"))
    ident = Identity(cluster="c", user="alice", expires=clock.now() + timedelta(hours=2))
    return clock, backend, AppSessions(backend, clock, cache_ttl=1.0), ident


async def test_code_is_single_use_and_bound_to_its_app():
    clock, _, sessions, ident = await _setup()
    code = await sessions.new_code(ident, "grafana", "web/sessions/abc")
    with pytest.raises(AccessDenied):
        await sessions.redeem(code, "vault")  # another app: refused, and the code is used up
    code = await sessions.new_code(ident, "grafana", "web/sessions/abc")
    token, session = await sessions.redeem(code, "grafana")
    assert session.expires == clock.now() + timedelta(hours=1)
    with pytest.raises(AccessDenied):
        await sessions.redeem(code, "grafana")
    assert (await sessions.get(token, "grafana")).identity.user == "alice"
    assert await sessions.get(token, "vault") is None
    assert await sessions.get("nonsense", "grafana") is None


async def test_code_expires():
    clock, _, sessions, ident = await _setup()
    code = await sessions.new_code(ident, "grafana", "web/sessions/abc")
    clock.advance(61)
    with pytest.raises(AccessDenied):
        await sessions.redeem(code, "grafana")


async def test_session_ends_with_its_web_session_after_the_cache():
    clock, backend, sessions, ident = await _setup()
    token, _ = await sessions.redeem(
        await sessions.new_code(ident, "grafana", "web/sessions/abc"), "grafana"
    )
    assert await sessions.get(token, "grafana") is not None
    await backend.delete("web/sessions/abc")
    assert await sessions.get(token, "grafana") is not None  # cached for a second
    clock.advance(1.5)
    assert await sessions.get(token, "grafana") is None
    await sessions.end(token)


class _CountingBackend(MemoryBackend):
    """Counts reads of app session records; each read yields to the loop first (as a real
    backend's round trip does), so concurrent callers overlap."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.session_reads = 0
        self.hold_web_sessions: asyncio.Event | None = None
        self.held = asyncio.Event()

    async def get(self, key: str) -> Item:
        if key.startswith(PREFIX + "sessions/"):
            self.session_reads += 1
        if key.startswith("web/") and self.hold_web_sessions is not None:
            self.held.set()
            await self.hold_web_sessions.wait()
        await asyncio.sleep(0)
        return await super().get(key)


async def _counted_session():
    """A redeemed session over a :class:`_CountingBackend`: (clock, backend, sessions, token)."""
    clock = FakeClock()
    backend = _CountingBackend(clock)
    await backend.create(Item(key="web/sessions/abc", value=b"{}"))
    ident = Identity(cluster="c", user="alice", expires=clock.now() + timedelta(hours=2))
    sessions = AppSessions(backend, clock, cache_ttl=1.0)
    token, _ = await sessions.redeem(
        await sessions.new_code(ident, "grafana", "web/sessions/abc"), "grafana"
    )
    return clock, backend, sessions, token


async def test_concurrent_requests_after_the_cache_expired_read_the_session_once():
    clock, backend, sessions, token = await _counted_session()
    found = await asyncio.gather(*(sessions.get(token, "grafana") for _ in range(50)))
    assert all(s is not None and s.identity.user == "alice" for s in found)
    assert backend.session_reads == 1
    clock.advance(1.5)
    found = await asyncio.gather(*(sessions.get(token, "grafana") for _ in range(50)))
    assert all(s is not None for s in found)
    assert backend.session_reads == 2


async def test_a_logout_during_a_read_is_not_undone_by_it():
    clock, backend, sessions, token = await _counted_session()
    backend.hold_web_sessions = asyncio.Event()
    reading = asyncio.ensure_future(sessions.get(token, "grafana"))
    await backend.held.wait()  # the read has the session record, checks its web session
    await sessions.end(token)
    backend.hold_web_sessions.set()
    assert await reading is None
    assert await sessions.get(token, "grafana") is None
