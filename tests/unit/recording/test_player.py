from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import BadParameter
from bastion.recording.asciicast import CastEvent
from bastion.recording.player import schedule

EVENTS = [
    CastEvent(0.5, "o", "a"),
    CastEvent(0.7, "i", "x"),
    CastEvent(10.5, "o", "b"),
    CastEvent(11.0, "r", "100x30"),
]


def test_real_timing_skips_input_events() -> None:
    steps = list(schedule(EVENTS))
    assert [(round(s.delay, 6), s.event.data) for s in steps] == [
        (0.5, "a"), (10.0, "b"), (0.5, "100x30")]  # fmt: skip


def test_speed_and_idle_cap() -> None:
    steps = list(schedule(EVENTS, speed=2, idle_cap=1.0))
    assert [s.delay for s in steps] == [0.25, 0.5, 0.25]


@pytest.mark.parametrize("speed", [0, -1, float("nan"), float("inf")])
def test_bad_speed_is_refused(speed: float) -> None:
    with pytest.raises(BadParameter):
        list(schedule(EVENTS, speed=speed))
    with pytest.raises(BadParameter):
        list(schedule(EVENTS, idle_cap=0))


@given(
    st.lists(st.floats(0, 1e5, allow_nan=False), max_size=30).map(sorted),
    st.floats(0.1, 10),
    st.floats(0.1, 5),
)
def test_total_time_is_bounded(times: list[float], speed: float, cap: float) -> None:
    events = [CastEvent(t, "o", "x") for t in times]
    steps = list(schedule(events, speed=speed, idle_cap=cap))
    assert all(0 <= s.delay <= cap / speed + 1e-9 for s in steps)
    real = sum(s.delay for s in schedule(events, speed=speed))
    assert real == pytest.approx((times[-1] if times else 0) / speed)


def _timeline() -> list:
    events = [CastEvent(t, "o", text) for t, text in ((0.0, "a"), (2.0, "b"), (8.0, "c"))]
    return list(schedule([*events, CastEvent(9.0, "r", "80x24"), CastEvent(12.0, "o", "d")]))


def test_playback_runs_pauses_and_resumes() -> None:
    from bastion.recording.player import Playback

    player = Playback(_timeline())
    assert player.elapse(0) == b"a" and player.wait() == 2.0
    player.toggle_pause()
    assert player.wait() is None and player.elapse(5.0) == b""  # time passes, nothing plays
    player.toggle_pause()
    assert player.wait() == 2.0 and player.elapse(2.0) == b"b"
    assert player.elapse(100) == b"cd" and player.done and player.position == 12.0


def test_playback_seeks_forward_and_back() -> None:
    from bastion.recording.player import RESET, SEEK_STEP, Playback

    player = Playback(_timeline())
    player.elapse(0)
    assert player.seek(SEEK_STEP) == b"b" and player.position == 5.0  # skipped output at once
    assert player.seek(SEEK_STEP) == b"c" and player.position == 10.0
    assert player.seek(-SEEK_STEP) == RESET + b"ab"  # redrawn from the start up to 5 s
    assert player.position == 5.0 and player.wait() == 3.0
    assert player.seek(-60) == RESET + b"a" and player.position == 0.0  # clamped to the start
    assert player.seek(60) == b"bcd" and player.done  # clamped to the end
