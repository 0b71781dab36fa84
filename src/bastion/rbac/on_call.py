"""On-call schedules: who is on call at a given instant (for automatic approval of requests).

Layer: rbac (pure: text in, answers out; the file is read by :mod:`bastion.auth.requests`).
Two formats, chosen by :func:`parse_schedule` from the file name:

* **YAML rotation** (``.yaml``/``.yml``): explicit ``shifts`` and/or a repeating ``rotation``::

      shifts:                       # one-off shifts (a top-level list means the same)
        - {user: alice, start: 2026-12-07T09:00:00Z, end: 2026-12-14T09:00:00Z}
      rotation:                     # weekly (or any period) hand-over, round robin
        start: 2026-12-07T09:00:00Z # the first hand-over
        every: 7d                   # default 7d
        users: [alice, bob, carol]

* **iCalendar** (``.ics``): every ``VEVENT`` is a shift; its user is named in ``SUMMARY``
  (as a word: ``On call: alice``) or by an ``ATTENDEE`` (``mailto:alice@example.com`` matches
  ``alice@example.com`` and ``alice``; its ``CN`` matches too). ``RRULE``/``EXDATE``/``RDATE``
  recurrences are expanded by ``recurring-ical-events``. Times without a zone are UTC.

A shift covers ``start <= now < end``. :meth:`Schedule.on_call` is the set of users on call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import yaml

from bastion.types.duration import parse_duration

__all__ = ["Schedule", "ScheduleError", "Shift", "parse_ical", "parse_schedule", "parse_yaml"]

_WORD = re.compile(r"[\w.@+-]+")


class ScheduleError(ValueError):
    """A schedule that cannot be read: the message names the problem."""


@dataclass(frozen=True, slots=True)
class Shift:
    user: str
    start: datetime
    end: datetime

    def covers(self, now: datetime) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True, slots=True)
class Rotation:
    """Round robin: ``users[i]`` is on call from ``start + i*every`` for ``every``, repeating."""

    start: datetime
    every: timedelta
    users: tuple[str, ...]

    def on_call(self, now: datetime) -> str | None:
        if not self.users or now < self.start:
            return None
        slot = int((now - self.start) // self.every)
        return self.users[slot % len(self.users)]


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule; ``calendar`` is an ``icalendar.Calendar`` (expanded on each query)."""

    shifts: tuple[Shift, ...] = ()
    rotation: Rotation | None = None
    calendar: Any = field(default=None, compare=False)

    def on_call(self, now: datetime) -> frozenset[str]:
        """Every user on call at ``now`` (a naive ``now`` is UTC)."""
        now = _utc(now)
        users = {s.user for s in self.shifts if s.covers(now)}
        if self.rotation is not None and (who := self.rotation.on_call(now)) is not None:
            users.add(who)
        if self.calendar is not None:
            users |= _ical_users(self.calendar, now)
        return frozenset(users)

    def is_on_call(self, user: str, now: datetime) -> bool:
        return user in self.on_call(now)


def _utc(value: datetime | date) -> datetime:
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _instant(value: Any, what: str) -> datetime:
    if isinstance(value, date):
        return _utc(value)
    if isinstance(value, str):
        try:
            return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise ScheduleError(f"{what}: {value!r} is not a date-time (use 2026-12-07T09:00:00Z)")


def _user(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScheduleError(f"{what}: user must be a non-empty string")
    return value.strip()


def _shifts(items: Any) -> tuple[Shift, ...]:
    if not isinstance(items, list):
        raise ScheduleError("shifts: expected a list of {user, start, end}")
    out = []
    for i, item in enumerate(items):
        where = f"shift {i + 1}"
        if not isinstance(item, dict) or set(item) - {"user", "start", "end"}:
            raise ScheduleError(f"{where}: expected exactly user, start and end")
        start, end = _instant(item.get("start"), where), _instant(item.get("end"), where)
        if end <= start:
            raise ScheduleError(f"{where}: end must be after start")
        out.append(Shift(_user(item.get("user"), where), start, end))
    return tuple(out)


def _rotation(item: Any) -> Rotation:
    if not isinstance(item, dict) or set(item) - {"start", "every", "users"}:
        raise ScheduleError("rotation: expected start, every and users")
    users = item.get("users")
    if not isinstance(users, list) or not users:
        raise ScheduleError("rotation: users must be a non-empty list")
    every_text = item.get("every", "7d")
    try:
        every = parse_duration(str(every_text))
    except ValueError as exc:
        raise ScheduleError(f"rotation: every: {exc}") from None
    if every <= timedelta(0):
        raise ScheduleError("rotation: every must be positive")
    names = tuple(_user(u, "rotation") for u in users)
    return Rotation(_instant(item.get("start"), "rotation"), every, names)


def parse_yaml(text: str) -> Schedule:
    """A YAML rotation (see the module docstring).

    Raises:
        ScheduleError: malformed YAML, an unknown key, a bad time or an empty rotation.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScheduleError(f"invalid YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(data, list):
        return Schedule(shifts=_shifts(data))
    if not isinstance(data, dict) or set(data) - {"shifts", "rotation"} or not data:
        raise ScheduleError("expected a list of shifts or a mapping with shifts and/or rotation")
    shifts = _shifts(data["shifts"]) if "shifts" in data else ()
    rotation = _rotation(data["rotation"]) if "rotation" in data else None
    return Schedule(shifts=shifts, rotation=rotation)


def parse_ical(text: str) -> Schedule:
    """An iCalendar file (see the module docstring).

    Raises:
        ScheduleError: not a parseable VCALENDAR.
    """
    import icalendar

    try:
        calendar = icalendar.Calendar.from_ical(text)
    except ValueError as exc:
        raise ScheduleError(f"invalid iCalendar: {str(exc).splitlines()[0][:200]}") from None
    if calendar.name != "VCALENDAR":
        raise ScheduleError("invalid iCalendar: no VCALENDAR")
    return Schedule(calendar=calendar)


def _event_users(event: Any) -> set[str]:
    names = set(_WORD.findall(str(event.get("SUMMARY", ""))))
    attendees = event.get("ATTENDEE", [])
    if not isinstance(attendees, list):
        attendees = [attendees]
    for attendee in attendees:
        address = str(attendee)
        if address.lower().startswith("mailto:"):
            address = address[7:]
        names.add(address)
        names.add(address.partition("@")[0])
        cn = getattr(attendee, "params", {}).get("CN")
        if cn:
            names.add(str(cn))
    return {n for n in names if n}


def _ical_users(calendar: Any, now: datetime) -> set[str]:
    import recurring_ical_events  # type: ignore[import-untyped]

    users: set[str] = set()
    try:
        events: Iterable[Any] = recurring_ical_events.of(calendar).between(
            now, now + timedelta(seconds=1)
        )
        for event in events:
            start, end = event.get("DTSTART"), event.get("DTEND")
            if start is not None and end is not None:
                if not _utc(start.dt) <= now < _utc(end.dt):
                    continue
            users |= _event_users(event)
    except (ValueError, TypeError) as exc:
        raise ScheduleError(f"invalid iCalendar event: {exc}") from None
    return users


def parse_schedule(path: str, text: str) -> Schedule:
    """Parse by the file name: ``.ics`` is iCalendar; ``.yaml``/``.yml`` a YAML rotation.

    Raises:
        ScheduleError: another extension or an unreadable schedule.
    """
    lower = path.lower()
    if lower.endswith(".ics"):
        return parse_ical(text)
    if lower.endswith((".yaml", ".yml")):
        return parse_yaml(text)
    raise ScheduleError(f"{path}: use a .ics (iCalendar) or .yaml (rotation) file")
