"""Core endpoints: bodies parse durations, refuse typos, and replies carry certificates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from bastion.contract.core import (
    CREATE_USER,
    LOGIN,
    PING,
    UPDATE_USER,
    EventQuery,
    Login,
    NewToken,
    ProofQuery,
    UserChange,
)


def test_durations_read_and_written_as_text() -> None:
    body = Login.model_validate({"user": "a", "password": "p", "public_key": "k", "ttl": "1h30m"})
    assert body.ttl == timedelta(hours=1, minutes=30)
    assert body.model_dump(mode="json")["ttl"] == "1h30m"
    assert NewToken().ttl == timedelta(minutes=30)
    with pytest.raises(ValidationError, match="ttl"):
        NewToken.model_validate({"ttl": 30})


def test_an_absent_field_is_not_a_change() -> None:
    assert UserChange.model_validate({"roles": ["a"]}).model_dump(exclude_none=True) == {
        "roles": ["a"]
    }


def test_audiences_and_statuses() -> None:
    assert PING.audience == LOGIN.audience == "public"
    assert CREATE_USER.audience == "user" and CREATE_USER.status == 201
    assert UPDATE_USER.params == ("name",)


def test_query_bounds() -> None:
    with pytest.raises(ValidationError):
        EventQuery(limit=0)
    with pytest.raises(ValidationError):
        ProofQuery(index=-1)
