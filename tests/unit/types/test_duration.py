from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.types.duration import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("12h", 43200),
        ("1h30m", 5400),
        ("7d", 604800),
        ("500ms", 0.5),
        (90, 90),
    ],
)
def test_parse(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "12", "1x", "1h 30m", "-5m", True, -1])
def test_bad(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**7))
def test_round_trip(seconds):
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta
