from datetime import timedelta

import pytest

from bastion.backend.base import Item
from bastion.backend.memory import MemoryBackend
from bastion.errors import AccessDenied
from bastion.services.app_sessions import AppSessions
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
