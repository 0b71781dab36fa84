from datetime import UTC, timedelta

from bastion.clock import FakeClock, SystemClock


def test_fake_clock_moves_only_when_told():
    clock = FakeClock()
    t0, m0 = clock.now(), clock.monotonic()
    clock.advance(timedelta(seconds=5))
    clock.advance(1.5)
    assert clock.now() - t0 == timedelta(seconds=6.5)
    assert clock.monotonic() - m0 == 6.5


def test_system_clock_is_aware():
    assert SystemClock().now().tzinfo is UTC
