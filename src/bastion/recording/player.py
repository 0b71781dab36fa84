"""The playback schedule of ``bsh play``: when to write what, and where a seek lands.

Layer: pure (no terminal, no sleeping): events in, ``(delay, event)`` steps out. The CLI sleeps
each delay and writes the text; tests check the schedule directly. :class:`Playback` is the
interactive player's state (position, pause, seek) as a sans-IO machine: the CLI feeds it elapsed
time and keys and writes the bytes it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from bastion.errors import BadParameter
from bastion.recording.asciicast import CastEvent

__all__ = ["DEFAULT_IDLE_CAP", "RESET", "SEEK_STEP", "PlayStep", "Playback", "schedule"]

DEFAULT_IDLE_CAP = 1.0
"""Seconds an idle gap lasts at most with ``--skip-idle`` (asciinema's ``idle_time_limit``)."""


SEEK_STEP = 5.0
"""Seconds of playback an arrow key seeks (left: back, right: forward)."""
RESET = b"\x1bc"
"""Resets the terminal before a backward seek redraws the recording from its start."""


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


class Playback:
    """The interactive player: a position on the playback timeline, paused or running.

    Each method returns the bytes to write now. Seeking forward writes the output it skips over
    at once; seeking back resets the terminal and redraws everything up to the new position.

    Args:
        steps: the schedule (:func:`schedule`); their delays make the timeline.
    """

    def __init__(self, steps: Sequence[PlayStep]) -> None:
        self._steps = list(steps)
        self._times: list[float] = []
        at = 0.0
        for step in self._steps:
            at += step.delay
            self._times.append(at)
        self._next = 0
        self.position = 0.0
        self.paused = False

    @property
    def end(self) -> float:
        return self._times[-1] if self._times else 0.0

    @property
    def done(self) -> bool:
        return self._next >= len(self._steps)

    def wait(self) -> float | None:
        """Seconds until the next output is due; None while paused (wait for a key)."""
        if self.paused or self.done:
            return None
        return max(self._times[self._next] - self.position, 0.0)

    def elapse(self, seconds: float) -> bytes:
        """Real time passed: move on (unless paused) and return the output now due."""
        if not self.paused:
            self.position = min(self.position + max(seconds, 0.0), self.end)
        return self._emit_until(self.position)

    def toggle_pause(self) -> None:
        self.paused = not self.paused

    def seek(self, delta: float) -> bytes:
        """Move ``delta`` seconds (negative: back), within the recording."""
        target = min(max(self.position + delta, 0.0), self.end)
        if target >= self.position:
            self.position = target
            return self._emit_until(target)
        self.position, self._next = target, 0
        return RESET + self._emit_until(target)

    def _emit_until(self, position: float) -> bytes:
        out = bytearray()
        while self._next < len(self._steps) and self._times[self._next] <= position:
            event = self._steps[self._next].event
            if event.code == "o":
                out += event.data.encode()
            self._next += 1
        return bytes(out)
