"""RFC 9162 (Certificate Transparency 2.0) Merkle tree hashing and proofs, sans-IO.

Layer: audit (pure; hashlib only, no IO, no clock). Definitions follow RFC 9162 section 2.1:

* ``MTH({}) = SHA-256()``; a leaf is ``SHA-256(0x00 || data)``; an interior node is
  ``SHA-256(0x01 || left || right)``; for n > 1 the left subtree holds the largest power of two
  k < n leaves.
* Inclusion proofs (``PATH(m, D[n])``, 2.1.3) and consistency proofs (``PROOF(m, D[n])``, 2.1.4)
  are generated from the leaf hashes and verified with the algorithms of 2.1.3.2 and 2.1.4.2.
* :class:`CompactRange` is the tree's right frontier: the roots of the perfect subtrees that
  make up a tree of size n (one per set bit of n). Appending a leaf is O(log n) and the root is
  available at any time, so the log never re-hashes history to sign a checkpoint.

The distinct 0x00 / 0x01 prefixes are what stop a leaf from being passed off as an interior
node (second-preimage attacks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH of the empty tree."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over the given *leaf hashes*, bottom up in O(n).

    Pairing level by level and carrying an odd last node up unchanged builds exactly the
    RFC 9162 shape (left subtrees are perfect), so this equals the recursive definition.
    """
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    sha = hashlib.sha256
    while len(level) > 1:
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """``PATH(index, D[n])`` over the leaf hashes (RFC 9162 2.1.3.1), leaf side first.

    Raises:
        ValueError: ``index`` is not in ``[0, n)``.
    """
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of size {len(leaves)}")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root(leaves[lo : lo + k]))
            lo = lo + k
    path.reverse()
    return path


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """Check that ``leaf`` (a leaf hash) is at ``index`` in the tree of ``size`` with
    ``expected_root`` (RFC 9162 2.1.3.2). Never raises on bad input: False."""
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """``PROOF(old_size, D[n])`` (RFC 9162 2.1.4.1): proves the tree of ``old_size`` is a
    prefix of the tree over ``leaves``. Empty when ``old_size`` is 0 or n.

    Raises:
        ValueError: ``old_size`` is not in ``[0, n]``.
    """
    n = len(leaves)
    if not 0 <= old_size <= n:
        raise ValueError(f"size {old_size} is not in [0, {n}]")
    if old_size in (0, n):
        return []
    return _subproof(old_size, leaves, 0, n, True)


def _subproof(m: int, leaves: Sequence[bytes], lo: int, hi: int, whole: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if whole else [root(leaves[lo:hi])]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves, lo, lo + k, whole), root(leaves[lo + k : hi])]
    return [*_subproof(m - k, leaves, lo + k, hi, False), root(leaves[lo : lo + k])]


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check that the tree (``old_size``, ``old_root``) is a prefix of (``new_size``,
    ``new_root``) (RFC 9162 2.1.4.2). Never raises on bad input: False."""
    if not 0 <= old_size <= new_size or any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # the empty tree is a prefix of every tree
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


@dataclass(slots=True)
class CompactRange:
    """The right frontier of a tree: roots of its perfect subtrees, largest (leftmost) first.

    ``len(hashes) == popcount(size)``. Appending is O(log n); :meth:`root` is O(log n).
    """

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash at index ``size``."""
        self.hashes.append(leaf)
        n = self.size
        while n & 1:  # each trailing set bit of the old size merges two equal subtrees
            right = self.hashes.pop()
            left = self.hashes.pop()
            self.hashes.append(node_hash(left, right))
            n >>= 1
        self.size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """MTH of the tree of ``size`` leaves."""
        if not self.hashes:
            return EMPTY_ROOT
        r = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> CompactRange:
        return CompactRange(self.size, list(self.hashes))

    def check(self) -> bool:
        """Whether the shape is consistent (one hash per set bit, 32 bytes each)."""
        return self.size.bit_count() == len(self.hashes) and all(
            len(h) == HASH_SIZE for h in self.hashes
        )
