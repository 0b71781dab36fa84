"""What the verifiable log stores beside the events: tree state, leaf records, checkpoints.

Layer: audit (pure codecs; the records are read and written by :mod:`.checkpointer` and
:mod:`.verify`). Keys:

* ``audit/tree/state``: the tree's right frontier (:class:`~bastion.audit.merkle.CompactRange`)
  at the latest checkpoint, and that checkpoint's signed note. Updated by compare-and-swap, so
  two auth servers on one backend never fork it.
* ``audit/tree/leaves/<first index, 20 digits>``: leaf records, :data:`CHUNK` leaves per record
  (aligned), each leaf hash with the event's id and type. They let ``verify`` name the event that
  was changed, removed, moved or slipped in: the leaf hashes are trusted only after their Merkle
  root matched the signed checkpoint, so an attacker who edits them too is still detected (but
  then cannot be attributed to one event).
* ``audit/checkpoints/<tree size, 20 digits>``: every signed checkpoint note.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

from bastion.audit.log import STATE_KEY as LOG_STATE_KEY
from bastion.audit.merkle import HASH_SIZE, CompactRange
from bastion.backend.base import Backend
from bastion.errors import BadParameter

__all__ = [
    "CHECKPOINTS_PREFIX",
    "CHUNK",
    "LEAVES_PREFIX",
    "STATE_KEY",
    "LeafChunk",
    "TreeState",
    "Leaves",
    "checkpoint_key",
    "chunk_key",
    "load_leaves",
]

STATE_KEY = LOG_STATE_KEY
LEAVES_PREFIX = "audit/tree/leaves/"
CHECKPOINTS_PREFIX = "audit/checkpoints/"
CHUNK = 1000
"""Leaves per leaf record (records start at multiples of CHUNK)."""


def chunk_key(start: int) -> str:
    return f"{LEAVES_PREFIX}{start:020d}"


def checkpoint_key(size: int) -> str:
    return f"{CHECKPOINTS_PREFIX}{size:020d}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except binascii.Error:
        raise BadParameter(f"{what}: not base64") from None


@dataclass(slots=True)
class TreeState:
    frontier: CompactRange = field(default_factory=CompactRange)
    note: str = ""
    """The signed checkpoint of ``frontier.size`` (empty before the first checkpoint)."""
    time: str = ""

    @property
    def size(self) -> int:
        return self.frontier.size

    def encode(self) -> bytes:
        return json.dumps(
            {
                "size": self.frontier.size,
                "frontier": [_b64(h) for h in self.frontier.hashes],
                "note": self.note,
                "time": self.time,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> TreeState:
        """Raises: BadParameter when the record is corrupt."""
        try:
            raw = json.loads(data)
            frontier = CompactRange(
                int(raw["size"]), [_unb64(h, "tree state") for h in raw["frontier"]]
            )
            state = cls(frontier, str(raw["note"]), str(raw.get("time", "")))
        except (ValueError, KeyError, TypeError):
            raise BadParameter(f"the tree state record {STATE_KEY} is corrupt") from None
        if not frontier.check():
            raise BadParameter(f"the tree state record {STATE_KEY} is inconsistent")
        return state


@dataclass(slots=True)
class LeafChunk:
    start: int
    hashes: list[bytes]
    ids: list[str]
    types: list[str]

    @property
    def end(self) -> int:
        return self.start + len(self.hashes)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "start": self.start,
                "hashes": _b64(b"".join(self.hashes)),
                "ids": self.ids,
                "types": self.types,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> LeafChunk:
        """Raises: BadParameter when the record is corrupt."""
        try:
            raw = json.loads(data)
            blob = _unb64(raw["hashes"], "leaf record")
            hashes = [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]
            chunk = cls(int(raw["start"]), hashes, list(raw["ids"]), list(raw["types"]))
        except (ValueError, KeyError, TypeError):
            raise BadParameter("a leaf record is corrupt") from None
        if len(blob) % HASH_SIZE or not len(hashes) == len(chunk.ids) == len(chunk.types):
            raise BadParameter(f"the leaf record at {chunk.start} is inconsistent")
        return chunk


@dataclass(frozen=True, slots=True)
class Leaves:
    """Leaf hashes with the id and type of each event, index by index."""

    hashes: list[bytes]
    ids: list[str]
    types: list[str]


async def load_leaves(backend: Backend) -> Leaves:
    """Every leaf record, concatenated; stops at the first missing or corrupt record (the
    leaves are trusted only once their root matched a signed checkpoint)."""
    out = Leaves([], [], [])
    for item in await backend.get_range(LEAVES_PREFIX):
        try:
            chunk = LeafChunk.decode(item.value)
        except BadParameter:
            break
        if chunk.start != len(out.hashes):
            break
        out.hashes.extend(chunk.hashes)
        out.ids.extend(chunk.ids)
        out.types.extend(chunk.types)
    return out
