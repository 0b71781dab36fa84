"""Pure helpers and value types of the backend contract."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.backend import Backend, MemoryBackend
from bastion.backend.base import Event, EventType, Item, key, prefix_end


def test_key_joins_parts() -> None:
    assert key("roles", "dev") == "roles/dev"
    assert key("single") == "single"


@pytest.mark.parametrize("parts", [("",), ("a", ""), ("a/b",), ("a", "b/c")])
def test_key_rejects_empty_parts_and_slashes(parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="invalid key part"):
        key(*parts)


@given(st.text(), st.text())
def test_prefix_end_bounds_every_extension(prefix: str, suffix: str) -> None:
    end = prefix_end(prefix)
    assert prefix <= prefix + suffix
    if not suffix.startswith("\U0010ffff"):
        assert prefix + suffix < end


def test_prefix_end_excludes_sibling_prefixes() -> None:
    assert "ab/" > "a/" and "ab/x" >= prefix_end("a/")


def test_item_and_event_are_frozen() -> None:
    item = Item("k", b"v")
    assert item.revision == 0 and item.expires is None
    with pytest.raises(FrozenInstanceError):
        item.value = b"w"  # type: ignore[misc]
    event = Event(EventType.DELETE, item)
    assert event.type.value == "delete"


def test_memory_backend_satisfies_the_protocol() -> None:
    assert isinstance(MemoryBackend(sweep_interval=None), Backend)
