"""The Bastion-MFA header codec."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.api.mfa_header import MAX_HEADER, decode_assertion, encode_assertion
from bastion.errors import BadParameter

ASSERTION = {
    "id": "abc",
    "rawId": "abc",
    "type": "public-key",
    "response": {"clientDataJSON": "e30", "authenticatorData": "AA", "signature": "AA"},
}


def test_round_trip_and_header_safe() -> None:
    value = encode_assertion(ASSERTION)
    assert decode_assertion(value) == ASSERTION
    assert "=" not in value and "\n" not in value and "+" not in value and "/" not in value


@pytest.mark.parametrize("value", ["!!!", "bm90IGpzb24", "WzFd", "x" * (MAX_HEADER + 1)])
def test_bad_values_are_bad_parameter(value: str) -> None:
    with pytest.raises(BadParameter):
        decode_assertion(value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(), _json, max_size=4))
def test_any_object_round_trips(obj: dict[str, Any]) -> None:
    assert decode_assertion(encode_assertion(obj)) == obj


@given(st.text(max_size=200))
def test_garbage_only_bad_parameter(value: str) -> None:
    try:
        assert isinstance(decode_assertion(value), dict)
    except BadParameter:
        pass
