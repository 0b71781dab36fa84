"""Naming tampering: every way of editing the stored sequence is attributed to the event."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from bastion.audit.findings import TrustedLeaves, classify
from bastion.audit.merkle import leaf_hash


def event(i: int, text: str = "") -> bytes:
    return json.dumps({"id": f"id{i}", "type": f"t{i % 3}", "index": i, "x": text}).encode()


def setup(n: int = 10) -> tuple[list[bytes], TrustedLeaves]:
    values = [event(i) for i in range(n)]
    trusted = TrustedLeaves(
        [leaf_hash(v) for v in values],
        [f"id{i}" for i in range(n)],
        [f"t{i % 3}" for i in range(n)],
    )
    return values, trusted


def find(stored: list[bytes | None], trusted: TrustedLeaves) -> list:
    out: dict[int, bytes | None] = {}
    n = len(trusted.hashes)
    for i in range(n):
        v = stored[i] if i < len(stored) else None
        if v is None or leaf_hash(v) != trusted.hashes[i]:
            out[i] = v
    tail = {i: v for i, v in enumerate(stored) if i >= n and v is not None}
    return classify(trusted, out, tail)


def test_nothing_tampered_nothing_found():
    values, trusted = setup()
    assert find(list(values), trusted) == []


def test_modified():
    values, trusted = setup()
    values[4] = event(4, "evil")
    (f,) = find(values, trusted)
    assert (f.kind, f.index, f.event_id, f.event_type) == ("modified", 4, "id4", "t1")
    assert "index 4 (id id4, type t1) was modified" in f.message


def test_deleted_in_place_and_truncated():
    values, trusted = setup()
    stored: list[bytes | None] = list(values)
    stored[3] = None
    (f,) = find(stored, trusted)
    assert (f.kind, f.index, f.event_id) == ("deleted", 3, "id3")
    found = find(list(values[:8]), trusted)
    assert [(f.kind, f.index) for f in found] == [("deleted", 8), ("deleted", 9)]


def test_deleted_with_renumbering_names_the_deleted_event_first():
    values, trusted = setup()
    stored: list[bytes | None] = values[:3] + values[4:]
    found = find(stored, trusted)
    assert (found[0].kind, found[0].index, found[0].event_id) == ("deleted", 3, "id3")
    assert [f.kind for f in found[1:]] == ["reordered"]
    assert "events 4..9 were reordered" in found[1].message


def test_swap_names_both_events():
    values, trusted = setup()
    values[2], values[6] = values[6], values[2]
    found = find(values, trusted)
    assert {(f.kind, f.index, f.event_id) for f in found} == {
        ("reordered", 6, "id6"),
        ("reordered", 2, "id2"),
    }


def test_insert_with_renumbering():
    values, trusted = setup()
    forged = json.dumps({"id": "evil", "type": "user.login", "index": 5}).encode()
    stored = values[:5] + [forged] + values[5:]
    found = find(stored, trusted)
    assert (found[0].kind, found[0].index, found[0].event_id, found[0].event_type) == (
        "inserted",
        5,
        "evil",
        "user.login",
    )
    assert [f.kind for f in found[1:]] == ["reordered"]


def test_unparseable_replacement_is_an_insert_and_a_delete():
    values, trusted = setup()
    stored: list[bytes | None] = list(values)
    stored[1] = b"garbage"
    kinds = {(f.kind, f.index) for f in find(stored, trusted)}
    assert kinds == {("inserted", 1), ("deleted", 1)}


@given(st.data())
def test_any_single_edit_is_found_and_named(data):
    values, trusted = setup(12)
    stored: list[bytes | None] = list(values)
    op = data.draw(st.sampled_from(["modify", "delete", "swap", "insert"]))
    i = data.draw(st.integers(0, 10))
    if op == "modify":
        stored[i] = event(i, "x")
    elif op == "delete":
        del stored[i]
    elif op == "swap":
        stored[i], stored[i + 1] = stored[i + 1], stored[i]
    else:
        stored.insert(i, event(99))
    found = find(stored, trusted)
    assert found
    assert any(f.index == i for f in found)
