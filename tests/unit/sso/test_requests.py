from __future__ import annotations

import pytest

from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.errors import AccessDenied
from bastion.sso.requests import REQUEST_TTL, RequestStore, SSORequest, display_code


def new(request_id: str = "r1") -> SSORequest:
    return SSORequest(
        id=request_id,
        connector="okta",
        kind="oidc",
        public_key="k",
        ttl_seconds=60,
        secret_hash="h",
    )


async def test_round_trip_and_conditional_save() -> None:
    clock = FakeClock()
    store = RequestStore(MemoryBackend(clock), clock)
    await store.create(new())
    first = await store.get("r1")
    second = await store.get("r1")
    first.status = "started"
    await store.save(first)
    second.status = "started"
    with pytest.raises(AccessDenied, match="already used"):
        await store.save(second)  # a concurrent (replayed) change loses
    assert (await store.get("r1")).status == "started"


async def test_delete_is_single_use_and_requests_expire() -> None:
    clock = FakeClock()
    store = RequestStore(MemoryBackend(clock), clock)
    await store.create(new())
    got = await store.get("r1")
    await store.delete(got)
    with pytest.raises(AccessDenied):
        await store.delete(got)
    await store.create(new("r2"))
    clock.advance(REQUEST_TTL.total_seconds() + 1)
    with pytest.raises(AccessDenied, match="unknown or expired"):
        await store.get("r2")


@pytest.mark.parametrize("bad", ["", "x" * 200, "nope"])
async def test_unknown_ids_are_access_denied(bad: str) -> None:
    clock = FakeClock()
    with pytest.raises(AccessDenied):
        await RequestStore(MemoryBackend(clock), clock).get(bad)


def test_display_code_is_stable_and_short() -> None:
    assert display_code("abc") == display_code("abc")
    assert display_code("abc") != display_code("abd")
    assert len(display_code("abc")) == 9 and display_code("abc")[4] == "-"
