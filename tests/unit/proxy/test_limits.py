"""Unauthenticated connection limits (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.proxy.limits import DEFAULT_MAX_PER_IP, DEFAULT_MAX_TOTAL, UnauthenticatedLimiter


def test_defaults() -> None:
    limiter = UnauthenticatedLimiter()
    assert (limiter.max_per_ip, limiter.max_total) == (DEFAULT_MAX_PER_IP, DEFAULT_MAX_TOTAL)
    assert (DEFAULT_MAX_PER_IP, DEFAULT_MAX_TOTAL) == (64, 4096)


def test_per_ip_limit_does_not_affect_others() -> None:
    limiter = UnauthenticatedLimiter(max_per_ip=2, max_total=10)
    assert limiter.acquire("10.0.0.1") and limiter.acquire("10.0.0.1")
    assert not limiter.acquire("10.0.0.1")
    assert limiter.acquire("10.0.0.2")
    limiter.release("10.0.0.1")
    assert limiter.acquire("10.0.0.1")
    assert limiter.count("10.0.0.1") == 2 and limiter.total == 3


def test_global_cap() -> None:
    limiter = UnauthenticatedLimiter(max_per_ip=5, max_total=3)
    assert all(limiter.acquire(f"10.0.0.{i}") for i in range(3))
    assert not limiter.acquire("10.0.0.9")
    limiter.release("10.0.0.0")
    assert limiter.acquire("10.0.0.9")


def test_release_without_acquire_is_ignored() -> None:
    limiter = UnauthenticatedLimiter()
    limiter.release("10.0.0.1")
    assert limiter.total == 0 and limiter.count("10.0.0.1") == 0


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        UnauthenticatedLimiter(max_per_ip=0)


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=200))
def test_counts_never_exceed_limits_and_return_to_zero(ops: list[tuple[bool, str]]) -> None:
    limiter = UnauthenticatedLimiter(max_per_ip=3, max_total=5)
    held: list[str] = []
    for acquire, ip in ops:
        if acquire:
            if limiter.acquire(ip):
                held.append(ip)
        elif ip in held:
            held.remove(ip)
            limiter.release(ip)
        assert limiter.total == len(held) <= 5
        assert all(limiter.count(i) == held.count(i) <= 3 for i in "abc")
    for ip in held:
        limiter.release(ip)
    assert limiter.total == 0
