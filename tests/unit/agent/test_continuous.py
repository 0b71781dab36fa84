"""Continuous checks: the pure decision (FakeClock) and the timer loop (a fake sleep); a real node
ends sessions in tests/integration/agent/test_continuous.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bastion.agent.continuous import (
    CERT_EXPIRED,
    CERT_EXPIRED_MESSAGE,
    IDLE_TIMEOUT,
    MAX_SLEEP,
    ActivityTracker,
    Check,
    ContinuousPolicy,
    next_check,
    watch_session,
)
from bastion.clock import FakeClock
from bastion.types.access import RoleOptions
from bastion.types.identity import Identity

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SEC = timedelta(seconds=1)


def identity(expires: datetime) -> Identity:
    return Identity(cluster="c", user="alice", roles=("dev",), logins=("a",), expires=expires)


# -- the pure decision -------------------------------------------------------------------------


def test_no_policy_never_checks() -> None:
    policy = ContinuousPolicy()
    assert not policy.active
    assert next_check(T0, T0, policy) == Check(None)


def test_policy_from_role_options() -> None:
    ident = identity(T0 + timedelta(hours=1))
    assert ContinuousPolicy.for_session(ident, RoleOptions()) == ContinuousPolicy()
    options = RoleOptions(client_idle_timeout="5m", disconnect_expired_cert=True)
    policy = ContinuousPolicy.for_session(ident, options)
    assert policy == ContinuousPolicy(timedelta(minutes=5), T0 + timedelta(hours=1))
    zero = ContinuousPolicy.for_session(ident, RoleOptions(client_idle_timeout="0s"))
    assert not zero.active


def test_idle_deadline_moves_with_activity() -> None:
    clock = FakeClock(T0)
    policy = ContinuousPolicy(idle_timeout=10 * SEC)
    assert next_check(clock.now(), T0, policy) == Check(T0 + 10 * SEC)
    clock.advance(9)
    last = clock.now()  # activity at t=9
    clock.advance(9)
    assert next_check(clock.now(), last, policy) == Check(last + 10 * SEC)
    clock.advance(1)
    check = next_check(clock.now(), last, policy)
    assert check.reason == IDLE_TIMEOUT
    assert check.message == "idle for 10s; disconnected"


def test_expiry_ends_at_the_certificate_expiry() -> None:
    clock = FakeClock(T0)
    policy = ContinuousPolicy(expires=T0 + 2 * SEC)
    assert next_check(clock.now(), T0, policy) == Check(T0 + 2 * SEC)
    clock.advance(1.999)
    assert next_check(clock.now(), clock.now(), policy).reason is None
    clock.advance(0.001)
    check = next_check(clock.now(), clock.now(), policy)
    assert (check.reason, check.message) == (CERT_EXPIRED, CERT_EXPIRED_MESSAGE)


def test_earliest_deadline_and_expiry_wins() -> None:
    policy = ContinuousPolicy(idle_timeout=timedelta(minutes=5), expires=T0 + 60 * SEC)
    assert next_check(T0, T0, policy).deadline == T0 + 60 * SEC
    policy = ContinuousPolicy(idle_timeout=30 * SEC, expires=T0 + 60 * SEC)
    assert next_check(T0, T0, policy).deadline == T0 + 30 * SEC
    assert next_check(T0 + 90 * SEC, T0, policy).reason == CERT_EXPIRED


def test_idle_message_formats_hours() -> None:
    policy = ContinuousPolicy(idle_timeout=timedelta(hours=1, minutes=30))
    check = next_check(T0 + timedelta(hours=2), T0, policy)
    assert check.message == "idle for 1h30m; disconnected"


# -- the timer loop, on a FakeClock ------------------------------------------------------------


class FakeSleep:
    """A sleep that advances the clock instead of waiting; records each delay."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


async def test_watch_returns_none_without_checks() -> None:
    clock = FakeClock(T0)
    sleep = FakeSleep(clock)
    tracker = ActivityTracker(clock)
    assert await watch_session(clock, ContinuousPolicy(), tracker, sleep=sleep) is None
    assert sleep.delays == []


async def test_watch_sleeps_until_idle_deadline_once() -> None:
    clock = FakeClock(T0)
    sleep = FakeSleep(clock)
    tracker = ActivityTracker(clock)
    check = await watch_session(clock, ContinuousPolicy(idle_timeout=10 * SEC), tracker,
                                sleep=sleep)  # fmt: skip
    assert check is not None and check.reason == IDLE_TIMEOUT
    assert sleep.delays == [10.0]  # one timer, no polling


async def test_watch_rearms_after_activity() -> None:
    clock = FakeClock(T0)
    tracker = ActivityTracker(clock)
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        clock.advance(seconds / 2)
        tracker.on_input(b"x")  # busy halfway through each of the first waits
        clock.advance(seconds / 2)

    async def busy_then_idle(seconds: float) -> None:
        if len(delays) < 3:
            await sleep(seconds)
        else:
            delays.append(seconds)
            clock.advance(seconds)

    check = await watch_session(clock, ContinuousPolicy(idle_timeout=10 * SEC), tracker,
                                sleep=busy_then_idle)  # fmt: skip
    assert check is not None and check.reason == IDLE_TIMEOUT
    # activity at 5, 12.5, 18.75 moves the deadline to 15, 22.5, 28.75; then idle until it
    assert delays == [10.0, 5.0, 7.5, 6.25]
    assert clock.now() - tracker.last_activity == 10 * SEC


async def test_watch_caps_long_sleeps() -> None:
    clock = FakeClock(T0)
    sleep = FakeSleep(clock)
    tracker = ActivityTracker(clock)
    policy = ContinuousPolicy(expires=T0 + timedelta(hours=1))
    check = await watch_session(clock, policy, tracker, sleep=sleep)
    assert check is not None and check.reason == CERT_EXPIRED
    assert max(sleep.delays) == MAX_SLEEP and sum(sleep.delays) == 3600


# -- a real node (asyncssh client) -------------------------------------------------------------
