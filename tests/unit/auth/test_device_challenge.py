"""Device challenges sent with the login's certificates (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bastion.auth.device_challenge import (
    CHALLENGE_TOKEN_TTL,
    challenge_key,
    is_challenge_token,
    mint_challenge,
    open_challenge,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
KEY = challenge_key(b"\x01" * 32)


def test_a_challenge_opens_for_its_user_until_it_expires() -> None:
    token = mint_challenge(KEY, "alice", NOW)
    assert is_challenge_token(token)
    opened = open_challenge(KEY, token, "alice", NOW + CHALLENGE_TOKEN_TTL - timedelta(seconds=1))
    assert opened is not None and len(opened.nonce) == 32
    assert opened.expires == NOW + CHALLENGE_TOKEN_TTL
    assert open_challenge(KEY, token, "alice", NOW + CHALLENGE_TOKEN_TTL) is None
    assert open_challenge(KEY, token, "bob", NOW) is None
    assert open_challenge(challenge_key(b"\x02" * 32), token, "alice", NOW) is None
    assert mint_challenge(KEY, "alice", NOW) != token  # a fresh nonce each time


@given(st.text(max_size=600))
def test_anything_else_never_opens(text: str) -> None:
    assert open_challenge(KEY, text, "alice", NOW) is None
    assert open_challenge(KEY, "dc1." + text, "alice", NOW) is None


@given(st.integers(4, 200), st.characters(codec="ascii"))
def test_a_changed_character_never_opens(position: int, char: str) -> None:
    token = mint_challenge(KEY, "alice", NOW)
    index = position % len(token)
    changed = token[:index] + char + token[index + 1 :]
    if changed != token:
        assert open_challenge(KEY, changed, "alice", NOW) is None


def test_a_ping_challenge_opens_for_any_user() -> None:
    token = mint_challenge(KEY, "", NOW)
    assert open_challenge(KEY, token, "alice", NOW) is not None
    assert open_challenge(KEY, token, "bob", NOW) is not None
