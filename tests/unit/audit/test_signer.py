import json

import pytest

from bastion.audit.note import open_note
from bastion.audit.signer import (
    SIGNER_KEY,
    load_or_create_signer,
    load_signer,
    load_verifier,
    origin_of,
)
from bastion.backend.base import Item
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.errors import BadParameter, NotFound

KEK = bytes(32)


async def test_created_once_sealed_and_reloaded():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    with pytest.raises(NotFound):
        await load_signer(backend, KEK)
    a = await load_or_create_signer(backend, KEK, "my cluster+x", clock)
    b = await load_or_create_signer(backend, KEK, "other", clock)  # the stored one wins
    assert a.verifier_key == b.verifier_key and a.name == "my-cluster-x/audit"
    record = json.loads((await backend.get(SIGNER_KEY)).value)
    assert "PRIVATE" not in json.dumps(record) and record["private_key_encrypted"]
    note = a.sign("x/audit\n1\n" + "A" * 43 + "=\n")
    assert open_note(note, await load_verifier(backend, None))
    assert open_note(note, await load_verifier(backend, KEK))


async def test_wrong_kek_and_swapped_public_key_are_refused():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    await load_or_create_signer(backend, KEK, "c1", clock)
    with pytest.raises(BadParameter):
        await load_signer(backend, bytes([1]) * 32)
    other = MemoryBackend(clock)
    mine = await load_or_create_signer(other, KEK, "c1", clock)
    record = json.loads((await backend.get(SIGNER_KEY)).value)
    record["verifier_key"] = mine.verifier_key  # an attacker swaps the public key only
    await backend.put(Item(SIGNER_KEY, json.dumps(record).encode()))
    with pytest.raises(BadParameter):
        await load_verifier(backend, KEK)
    await backend.put(Item(SIGNER_KEY, b"{}"))
    with pytest.raises(BadParameter, match="corrupt"):
        await load_verifier(backend, None)


def test_origin():
    assert origin_of("") == "bastion/audit"
    assert origin_of("a b") == "a-b/audit"
