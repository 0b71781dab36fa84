"""Time arguments of bctl audit search."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bastion.cli.bctl_auth import parse_time
from bastion.errors import BadParameter

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", "2024-05-01T11:00:00+00:00"),
        ("90m", "2024-05-01T10:30:00+00:00"),
        ("2024-04-30T08:00:00", "2024-04-30T08:00:00+00:00"),  # naive means UTC
        ("2024-04-30T08:00:00+02:00", "2024-04-30T08:00:00+02:00"),
        ("2024-04-30T08:00:00Z", "2024-04-30T08:00:00+00:00"),
    ],
)
def test_parse_time(text: str, expected: str) -> None:
    assert parse_time(text, NOW) == expected


def test_parse_time_rejects_garbage() -> None:
    with pytest.raises(BadParameter, match="invalid time 'yesterday'"):
        parse_time("yesterday", NOW)
