"""Naming what was done to the log: compare stored events with the trusted leaf records.

Layer: audit (pure). Input: the trusted leaves (hash, id, type per index, already checked
against a signed checkpoint root) and the stored events that do not match them (by position).
Output: one :class:`Finding` per tampering, naming the event (index, id, type):

* ``modified``: the event at index i has the id the log signed for i, but other content;
* ``deleted``: the event the log signed for index i is nowhere in the store;
* ``reordered``: index i holds the event signed for index j (runs of equal shift are merged);
* ``inserted``: index i holds an event the log never signed (or a record under a key that is no
  index at all).

Only positions that do not match are examined, so the common case (nothing tampered) costs one
hash comparison per event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bastion.audit.merkle import leaf_hash

__all__ = ["Finding", "Kind", "TrustedLeaves", "classify"]

Kind = Literal[
    "modified",
    "deleted",
    "reordered",
    "inserted",
    "unreadable",
    "checkpoint",
    "witness",
    "gap",
    "unaudited",
]
_PRIORITY = {"deleted": 0, "inserted": 0, "modified": 0, "unreadable": 0, "reordered": 1}


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    message: str
    index: int | None = None
    event_id: str = ""
    event_type: str = ""
    key: str = ""
    """The backend key of a stored resource (``unaudited``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TrustedLeaves:
    hashes: Sequence[bytes]
    ids: Sequence[str]
    types: Sequence[str]


def _describe(value: bytes) -> tuple[str, str, object]:
    """(id, type, body index) of stored bytes, best effort."""
    try:
        body = json.loads(value)
    except ValueError:
        return "", "", None
    if not isinstance(body, dict):
        return "", "", None
    return str(body.get("id", "")), str(body.get("type", "")), body.get("index")


def _name(index: int, event_id: str, event_type: str) -> str:
    return f"index {index} (id {event_id or '?'}, type {event_type or '?'})"


def classify(
    trusted: TrustedLeaves,
    mismatched: Mapping[int, bytes | None],
    tail: Mapping[int, bytes] | None = None,
) -> list[Finding]:
    """Findings for the positions (below ``len(trusted.hashes)``) whose stored bytes differ
    from the trusted leaf; ``None`` means nothing is stored at that index. ``tail`` holds the
    stored events after the trusted range (not yet checkpointed): a signed event pushed there
    by an insertion counts as moved, not deleted."""
    if not mismatched:
        return []
    by_hash = {h: i for i, h in enumerate(trusted.hashes)}
    by_id = {e: i for i, e in enumerate(trusted.ids) if e}
    stored = {p: v for p, v in mismatched.items() if v is not None}
    stored.update(tail or {})
    seen_hashes = {leaf_hash(v): p for p, v in stored.items()}
    seen_ids = {d[0]: p for p, d in ((p, _describe(v)) for p, v in stored.items()) if d[0]}
    found: list[Finding] = []
    moves: list[tuple[int, int]] = []
    for pos, moved in sorted((tail or {}).items()):
        if leaf_hash(moved) in by_hash:
            moves.append((pos, by_hash[leaf_hash(moved)]))
    for pos in sorted(mismatched):
        value = mismatched[pos]
        want_id, want_type = trusted.ids[pos], trusted.types[pos]
        if value is not None:
            h = leaf_hash(value)
            got_id, got_type, _ = _describe(value)
            if h in by_hash:
                moves.append((pos, by_hash[h]))
            elif got_id and got_id == want_id:
                found.append(
                    Finding(
                        "modified",
                        f"{_name(pos, got_id, want_type)} was modified: its content differs "
                        "from what the log signed",
                        pos,
                        got_id,
                        want_type,
                    )
                )
            elif got_id in by_id:
                j = by_id[got_id]
                found.append(
                    Finding(
                        "modified",
                        f"{_name(j, got_id, trusted.types[j])} was modified and moved to index "
                        f"{pos}",
                        j,
                        got_id,
                        trusted.types[j],
                    )
                )
            else:
                found.append(
                    Finding(
                        "inserted",
                        f"{_name(pos, got_id, got_type)} was inserted: the log never signed "
                        "this event",
                        pos,
                        got_id,
                        got_type,
                    )
                )
        if trusted.hashes[pos] not in seen_hashes and want_id not in seen_ids:
            found.append(
                Finding(
                    "deleted",
                    f"{_name(pos, want_id, want_type)} was deleted: it is no longer stored",
                    pos,
                    want_id,
                    want_type,
                )
            )
    found.extend(_merge_moves(sorted(moves), trusted))
    found.sort(key=lambda f: (_PRIORITY.get(f.kind, 0), f.index if f.index is not None else -1))
    return found


def _merge_moves(moves: list[tuple[int, int]], trusted: TrustedLeaves) -> list[Finding]:
    """Runs of events all shifted by the same offset become one finding (a shift after an
    insert or delete); single moves (a swap) are named one by one."""
    out: list[Finding] = []
    i = 0
    while i < len(moves):
        pos, src = moves[i]
        k = i
        while k + 1 < len(moves) and moves[k + 1] == (moves[k][0] + 1, moves[k][1] + 1):
            k += 1
        first = _name(src, trusted.ids[src], trusted.types[src])
        if k == i:
            message = f"{first} was reordered: it is stored at index {pos}"
        else:
            last_src = moves[k][1]
            message = (
                f"events {src}..{last_src} were reordered: stored {pos - src:+d} positions "
                f"away (first: {first})"
            )
        out.append(Finding("reordered", message, src, trusted.ids[src], trusted.types[src]))
        i = k + 1
    return out
