import pytest

from bastion.audit.merkle import CompactRange, leaf_hash
from bastion.audit.tree import (
    LeafChunk,
    TreeState,
    checkpoint_key,
    chunk_key,
    load_leaves,
)
from bastion.backend.base import Item
from bastion.backend.memory import MemoryBackend
from bastion.errors import BadParameter


def test_state_round_trip_and_corruption():
    frontier = CompactRange()
    frontier.extend([leaf_hash(bytes([i])) for i in range(7)])
    state = TreeState(frontier, "note\n", "t")
    again = TreeState.decode(state.encode())
    assert again.size == 7 and again.frontier.root() == frontier.root() and again.note == "note\n"
    for bad in (b"", b"{}", b'{"size": 3, "frontier": [], "note": ""}'):
        with pytest.raises(BadParameter):
            TreeState.decode(bad)


def test_chunk_round_trip_and_corruption():
    chunk = LeafChunk(1000, [leaf_hash(b"a"), leaf_hash(b"b")], ["i1", "i2"], ["t", "t"])
    again = LeafChunk.decode(chunk.encode())
    assert again == chunk and again.end == 1002
    with pytest.raises(BadParameter):
        LeafChunk.decode(b'{"start": 0, "hashes": "AAAA", "ids": [], "types": []}')
    with pytest.raises(BadParameter):
        LeafChunk.decode(b"nope")
    assert chunk_key(5).endswith("/00000000000000000005")
    assert checkpoint_key(5).startswith("audit/checkpoints/")


async def test_load_leaves_stops_at_a_missing_record():
    backend = MemoryBackend()
    a = LeafChunk(0, [leaf_hash(b"a")] * 1000, ["i"] * 1000, ["t"] * 1000)
    c = LeafChunk(2000, [leaf_hash(b"c")], ["k"], ["t"])
    await backend.put(Item(chunk_key(0), a.encode()))
    await backend.put(Item(chunk_key(2000), c.encode()))
    leaves = await load_leaves(backend)
    assert len(leaves.hashes) == 1000 and leaves.ids[0] == "i"
