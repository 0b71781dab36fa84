"""On-call schedules (pure): YAML shifts and rotations, iCalendar events with weekly RRULEs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.rbac.on_call import ScheduleError, parse_ical, parse_schedule, parse_yaml

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # a Monday
USERS = st.lists(
    st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), min_size=1, max_size=6, unique=True
)
INSTANTS = st.integers(min_value=-10 * 24 * 3600, max_value=200 * 24 * 3600).map(
    lambda s: T0 + timedelta(seconds=s)
)


def _ics(*events: str) -> str:
    head = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bastion//test//EN\r\n"
    return head + "".join(events) + "END:VCALENDAR\r\n"


def _event(uid: str, start: str, end: str, *lines: str) -> str:
    body = "".join(f"{line}\r\n" for line in lines)
    return (
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261201T000000Z\r\n"
        f"DTSTART:{start}\r\nDTEND:{end}\r\n{body}END:VEVENT\r\n"
    )


@given(USERS, INSTANTS, st.integers(min_value=1, max_value=14))
def test_a_rotation_has_exactly_one_user_on_call_round_robin(
    users: list[str], now: datetime, days: int
) -> None:
    text = (
        f"rotation:\n  start: {T0.isoformat()}\n  every: {days}d\n  users: [{', '.join(users)}]\n"
    )
    on_call = parse_yaml(text).on_call(now)
    if now < T0:
        assert on_call == frozenset()
    else:
        slot = (now - T0) // timedelta(days=days)
        assert on_call == {users[slot % len(users)]}


@given(
    USERS, st.lists(st.tuples(INSTANTS, st.integers(1, 10**6)), min_size=1, max_size=5), INSTANTS
)
def test_shifts_cover_start_inclusive_end_exclusive(
    users: list[str], spans: list[tuple[datetime, int]], now: datetime
) -> None:
    shifts = [
        {"user": users[i % len(users)], "start": s.isoformat(),
         "end": (s + timedelta(seconds=n)).isoformat()}
        for i, (s, n) in enumerate(spans)
    ]  # fmt: skip
    schedule = parse_yaml(json.dumps({"shifts": shifts}))
    expected = {
        sh["user"]
        for sh in shifts
        if datetime.fromisoformat(sh["start"]) <= now < datetime.fromisoformat(sh["end"])
    }
    assert schedule.on_call(now) == expected
    for sh in shifts:  # the boundaries
        start = datetime.fromisoformat(sh["start"])
        end = datetime.fromisoformat(sh["end"])
        assert sh["user"] in schedule.on_call(start)
        assert schedule.is_on_call(sh["user"], end) == any(
            datetime.fromisoformat(o["start"]) <= end < datetime.fromisoformat(o["end"])
            for o in shifts
            if o["user"] == sh["user"]
        )


@given(st.integers(min_value=0, max_value=9), st.integers(min_value=0, max_value=6 * 24 - 1))
def test_a_weekly_rrule_repeats_each_week_and_only_during_the_shift(week: int, hour: int) -> None:
    ics = _ics(
        _event(
            "dba",
            "20261207T090000Z",
            "20261208T090000Z",
            "RRULE:FREQ=WEEKLY;COUNT=10",
            "SUMMARY:DBA on call: alice",
            "ATTENDEE;CN=Bob Builder:mailto:bob@example.com",
        )
    )
    schedule = parse_ical(ics)
    now = T0 + timedelta(weeks=week, hours=hour)
    inside = hour < 24
    for user in ("alice", "bob", "bob@example.com", "Bob Builder"):
        assert schedule.is_on_call(user, now) == inside
    assert not schedule.is_on_call("carol", now)


def test_after_the_rrule_count_and_on_excluded_dates_nobody_is_on_call() -> None:
    ics = _ics(
        _event(
            "a",
            "20261207T090000Z",
            "20261208T090000Z",
            "RRULE:FREQ=WEEKLY;COUNT=3",
            "EXDATE:20261214T090000Z",
            "SUMMARY:alice",
        )
    )
    s = parse_ical(ics)
    assert s.is_on_call("alice", T0 + timedelta(hours=1))
    assert not s.is_on_call("alice", T0 + timedelta(weeks=1, hours=1))  # excluded
    assert s.is_on_call("alice", T0 + timedelta(weeks=2, hours=1))
    assert not s.is_on_call("alice", T0 + timedelta(weeks=3, hours=1))  # past COUNT


def test_naive_times_are_utc_and_the_file_name_picks_the_parser() -> None:
    s = parse_schedule("x.yml", "- {user: a, start: 2026-12-07T09:00:00, end: 2026-12-07T10:00:00}")
    assert s.on_call(datetime(2026, 12, 7, 9, 30)) == {"a"}
    assert parse_schedule("x.ICS", _ics()).on_call(T0) == frozenset()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("x.yaml", "rotation: {start: 2026-12-07T09:00:00Z, users: []}", "non-empty"),
        ("x.yaml", "- {user: a, start: yesterday, end: 2026-12-07T09:00:00Z}", "not a date-time"),
        ("x.yaml", "- {user: a, start: 2026-12-08T09:00:00Z, end: 2026-12-07T09:00:00Z}", "after"),
        ("x.yaml", "oncall: [a]", "expected a list"),
        ("x.yaml", "rotation: {start: 2026-12-07T09:00:00Z, every: 1x, users: [a]}", "every"),
        ("x.yaml", "[: bad", "invalid YAML"),
        ("x.ics", "not a calendar", "iCalendar"),
        ("x.txt", "", ".ics"),
    ],
)
def test_bad_schedules_are_one_line_errors(name: str, text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as info:
        parse_schedule(name, text)
    assert "\n" not in str(info.value)
