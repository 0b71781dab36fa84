"""Go-style durations ("90s", "30m", "12h", "1h30m", "7d") used throughout configs and resources."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

__all__ = ["Duration", "format_duration", "parse_duration"]

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse ``"1h30m"``-style text (or seconds as a number) into a timedelta.

    Raises:
        ValueError: with a message that shows the accepted format.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 15m, 12h, 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return timedelta(seconds=value)
    text = value.strip()
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 15m, 12h, 1h30m, 7d")
    return timedelta(seconds=total)


def format_duration(delta: timedelta) -> str:
    """Render a timedelta the way :func:`parse_duration` reads it (``"12h"``, ``"1h30m"``)."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _coerce(value: object) -> object:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_duration(value)
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A timedelta field read from ``"12h"``-style text and written back the same way in JSON."""
