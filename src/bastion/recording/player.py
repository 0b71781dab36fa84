"""The playback schedule of ``bsh play``: when to write what.

Layer: pure (no terminal, no sleeping): events in, ``(delay, event)`` steps out. The CLI sleeps
each delay and writes the text; tests check the schedule directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bastion.errors import BadParameter
from bastion.recording.asciicast import CastEvent

__all__ = ["DEFAULT_IDLE_CAP", "PlayStep", "schedule"]

DEFAULT_IDLE_CAP = 1.0
"""Seconds an idle gap lasts at most with ``--skip-idle`` (asciinema's ``idle_time_limit``)."""


@dataclass(frozen=True, slots=True)
class PlayStep:
    delay: float
    """Seconds to wait before this step (already divided by the speed)."""
    event: CastEvent


def schedule(
    events: Iterable[CastEvent], *, speed: float = 1.0, idle_cap: float | None = None
) -> Iterator[PlayStep]:
    """Delays between the events that playback shows (output and resizes; input is not replayed,
    its effect is already in the output).

    Args:
        events: the recording's events, in order.
        speed: playback speed; 2 is twice as fast.
        idle_cap: the longest gap in recording time (before the speed applies); None keeps the
            real timing.

    Raises:
        BadParameter: a speed or cap that is not a positive number.
    """
    if not speed > 0 or speed == float("inf"):
        raise BadParameter(f"--speed must be a positive number, not {speed}")
    if idle_cap is not None and not idle_cap > 0:
        raise BadParameter(f"--idle-limit must be a positive number, not {idle_cap}")
    last = 0.0
    for event in events:
        if event.code not in ("o", "r"):
            continue
        gap = max(event.time - last, 0.0)
        last = max(last, event.time)
        if idle_cap is not None:
            gap = min(gap, idle_cap)
        yield PlayStep(gap / speed, event)
