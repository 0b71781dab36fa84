from hypothesis import given
from hypothesis import strategies as st

from bastion.api.ratelimit import RateLimiter


def test_burst_then_refill():
    rl = RateLimiter(rate=1.0, burst=3)
    assert [rl.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert rl.allow("b", 0.0)  # per key
    assert rl.allow("a", 1.0)
    assert not rl.allow("a", 1.0)


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_never_more_than_burst_plus_rate_times_elapsed(gaps):
    rl = RateLimiter(rate=2.0, burst=5)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += rl.allow("k", now)
    assert allowed <= 5 + 2.0 * now + 1e-9


def test_eviction_bounds_memory():
    rl = RateLimiter(rate=1.0, burst=1, max_keys=10)
    for i in range(100):
        rl.allow(f"k{i}", float(i * 10))
    assert len(rl._buckets) <= 10
