"""RFC 9162 hashing and proofs against a naive implementation written from the RFC's text."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit import merkle
from bastion.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def k_of(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) straight from RFC 9162 2.1.1 (recursive)."""
    if not d:
        return sha(b"")
    if len(d) == 1:
        return sha(b"\x00" + d[0])
    k = k_of(len(d))
    return sha(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) from RFC 9162 2.1.3.1."""
    if len(d) == 1:
        return []
    k = k_of(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) from RFC 9162 2.1.4.1."""
    if m == len(d):
        return [] if b else [mth(d)]
    k = k_of(len(d))
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


DATA = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


def test_known_vectors():
    assert EMPTY_ROOT.hex() == ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    # RFC 6962 / CT test vector: the tree of the single empty leaf.
    assert root([leaf_hash(b"")]).hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@given(DATA)
def test_root_matches_the_recursive_definition(data):
    leaves = [leaf_hash(x) for x in data]
    assert root(leaves) == mth(data)
    frontier = CompactRange()
    for i, leaf in enumerate(leaves):
        frontier.append(leaf)
        assert frontier.root() == mth(data[: i + 1])
        assert frontier.check()


@given(DATA, st.data())
def test_inclusion_proofs_match_and_verify(data, draw):
    leaves = [leaf_hash(x) for x in data]
    m = draw.draw(st.integers(0, len(data) - 1))
    proof = inclusion_proof(m, leaves)
    assert proof == path(m, data)
    top = mth(data)
    assert verify_inclusion(m, len(data), leaves[m], proof, top)
    assert not verify_inclusion(m, len(data), leaf_hash(data[m] + b"x"), proof, top)
    if len(data) > 1:
        other = (m + 1) % len(data)
        assert not verify_inclusion(other, len(data), leaves[m], proof, top) or (
            leaves[other] == leaves[m] and path(other, data) == proof
        )
        assert not verify_inclusion(m, len(data), leaves[m], proof[:-1], top)
        bad = [bytes(32)] + proof[1:]
        assert not verify_inclusion(m, len(data), leaves[m], bad, top)


@given(DATA, st.data())
def test_consistency_proofs_match_and_verify(data, draw):
    leaves = [leaf_hash(x) for x in data]
    n = len(data)
    m = draw.draw(st.integers(1, n))
    proof = consistency_proof(m, leaves)
    assert proof == ([] if m == n else subproof(m, data, True))
    old, new = mth(data[:m]), mth(data)
    assert verify_consistency(m, n, old, new, proof)
    assert not verify_consistency(m, n, sha(b"other"), new, proof)
    assert not verify_consistency(m, n, old, sha(b"other"), proof)
    if proof:
        assert not verify_consistency(m, n, old, new, proof[:-1])
        assert not verify_consistency(m, n, old, new, [*proof[:-1], bytes(32)])
    if m < n:
        # A rewritten history (any one leaf of the old tree changed) has no valid proof.
        changed = list(data)
        changed[m - 1] = changed[m - 1] + b"!"
        forged = consistency_proof(m, [leaf_hash(x) for x in changed])
        assert not verify_consistency(m, n, old, mth(changed), forged)


def test_edge_cases():
    leaves = [leaf_hash(bytes([i])) for i in range(5)]
    assert verify_consistency(0, 5, EMPTY_ROOT, root(leaves), [])
    assert not verify_consistency(3, 2, root(leaves[:3]), root(leaves[:2]), [])
    assert not verify_inclusion(0, 0, leaves[0], [], EMPTY_ROOT)
    assert not verify_inclusion(0, 1, leaves[0], [b"short"], leaves[0])
    with pytest.raises(ValueError):
        inclusion_proof(5, leaves)
    with pytest.raises(ValueError):
        consistency_proof(6, leaves)
    assert merkle.node_hash(leaves[0], leaves[1]) == sha(b"\x01" + leaves[0] + leaves[1])
    c = CompactRange()
    c.extend(leaves)
    assert c.copy().root() == root(leaves) and c.size == 5 and len(c.hashes) == 2
