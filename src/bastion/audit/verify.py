"""``bctl audit verify``: recompute the Merkle tree over every stored event and check it.

Layer: audit (reads the backend and the witness; the judgement is :mod:`.findings` and
:mod:`.merkle`). Steps:

1. Every checkpoint is collected and its signature checked with the log key: the stored ones
   (``audit/checkpoints/*``, the tree state), the external witness copy, and any checkpoint
   file the operator passes (kept from earlier, or from a monitor).
2. The leaf records are checked against all of them: the Merkle root of the first ``s`` leaves
   must equal every checkpoint of size ``s``, so one consistent history explains every signed
   checkpoint. Only then are the records trusted to name events.
3. Every stored event is hashed (its canonical bytes, exactly as stored) and compared with the
   trusted leaf of its index; the tree over the stored events is also compared with each
   checkpoint directly. Mismatches are attributed by :func:`~bastion.audit.findings.classify`.
4. Events after the newest checkpoint are not covered by a signature yet: they are counted and
   checked for holes and for index fields that disagree with their key.
5. Every stored resource (users, roles, tokens, locks, connectors, CAs, the auth preference,
   admin-created nodes) must hold exactly what the newest event naming its key wrote
   (:mod:`.state`); anything else was changed behind the log's back (``unaudited``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.audit.findings import Finding, Kind, TrustedLeaves, classify
from bastion.audit.log import PREFIX, WIDTH, AuditLog, index_of_key
from bastion.audit.merkle import CompactRange, consistency_proof, leaf_hash, verify_consistency
from bastion.audit.note import NoteVerifier, open_note, parse_checkpoint
from bastion.audit.state import LatestWrites, unaudited_state
from bastion.audit.tree import CHECKPOINTS_PREFIX, STATE_KEY, TreeState, load_leaves
from bastion.errors import BadParameter, NotFound

__all__ = ["SignedCheckpoint", "VerifyReport", "verify_log"]

BLOCK_DIGITS = 4
"""Events are read 10^4 at a time (one key prefix per block)."""


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    source: str
    size: int
    root: bytes


@dataclass(slots=True)
class VerifyReport:
    events: int = 0
    """Events stored (well-formed keys)."""
    verified: int = 0
    """Events covered by the newest valid checkpoint."""
    resources: int = 0
    """Stored resources checked against the event of their latest write."""
    checkpoints: list[SignedCheckpoint] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Informational lines (witness status, events not yet checkpointed)."""

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "verified": self.verified,
            "resources": self.resources,
            "checkpoints": [
                {"source": c.source, "size": c.size, "root": c.root.hex()} for c in self.checkpoints
            ],
            "findings": [f.to_dict() for f in self.findings],
            "notes": self.notes,
        }


def _checkpoint(source: str, note: str, verifier: NoteVerifier) -> SignedCheckpoint:
    cp = parse_checkpoint(open_note(note, verifier))
    if cp.origin != verifier.name:
        raise BadParameter(f"origin {cp.origin!r} is not this log ({verifier.name})")
    return SignedCheckpoint(source, cp.size, cp.root)


async def _collect(
    log: AuditLog, verifier: NoteVerifier, external: list[tuple[str, str]], report: VerifyReport
) -> None:
    notes: list[tuple[str, str]] = []
    for item in await log.backend.get_range(CHECKPOINTS_PREFIX):
        notes.append((f"stored checkpoint {item.key}", item.value.decode(errors="replace")))
    try:
        state = TreeState.decode((await log.backend.get(STATE_KEY)).value)
        if state.note:
            notes.append(("tree state", state.note))
    except NotFound:
        pass
    except BadParameter as exc:
        report.findings.append(Finding("checkpoint", exc.message))
    for source, note in [*notes, *external]:
        try:
            report.checkpoints.append(_checkpoint(source, note, verifier))
        except BadParameter as exc:
            kind: Kind = "checkpoint" if source.startswith(("stored", "tree")) else "witness"
            report.findings.append(
                Finding(kind, f"{source}: not a valid checkpoint of this log: {exc.message}")
            )
    roots: dict[int, SignedCheckpoint] = {}
    for cp in report.checkpoints:
        other = roots.setdefault(cp.size, cp)
        if other.root != cp.root:
            report.findings.append(
                Finding(
                    "checkpoint",
                    f"two signed checkpoints of size {cp.size} disagree ({other.source} and "
                    f"{cp.source}): the log was forked",
                )
            )


def _check_tree(
    leaves: list[bytes], checkpoints: list[SignedCheckpoint]
) -> SignedCheckpoint | None:
    """The first checkpoint the tree over ``leaves`` disagrees with (or is too short for)."""
    sizes = sorted(checkpoints, key=lambda c: c.size)
    tree = CompactRange()
    for cp in sizes:
        if cp.size > len(leaves):
            return cp
        tree.extend(leaves[tree.size : cp.size])
        if tree.root() != cp.root:
            return cp
    return None


@dataclass(slots=True)
class _Scan:
    """One streaming pass over the stored events: only what does not match is kept."""

    newest: int
    trusted: Sequence[bytes] | None
    """Trusted leaf hashes (None when the leaf records failed their check)."""
    seen: bytearray
    mismatched: dict[int, bytes | None] = field(default_factory=dict)
    tail: dict[int, bytes] = field(default_factory=dict)
    malformed: list[tuple[str, bytes]] = field(default_factory=list)
    ordered: list[bytes] = field(default_factory=list)
    """Leaf hashes of the stored events in key order (only without trusted leaves)."""
    writes: LatestWrites = field(default_factory=LatestWrites)
    """Per resource key, the newest event that wrote it."""
    count: int = 0

    def feed(self, index: int, value: bytes) -> None:
        self.count += 1
        self.writes.feed(index, value)
        if index >= self.newest:
            self.tail[index] = value
        else:
            self.seen[index] = 1
        if self.trusted is None:
            self.ordered.append(leaf_hash(value))
        elif index < self.newest and leaf_hash(value) != self.trusted[index]:
            self.mismatched[index] = value

    def finish(self) -> None:
        if self.trusted is not None:
            for i in range(self.newest):
                if not self.seen[i]:
                    self.mismatched[i] = None


async def _scan(log: AuditLog, scan: _Scan, upper: int) -> None:
    """Read every stored event block by block (10^4 per key prefix) into ``scan``."""
    block = 10**BLOCK_DIGITS
    b = 0
    while True:
        prefix = f"{PREFIX}{b * block:0{WIDTH}d}"[: len(PREFIX) + WIDTH - BLOCK_DIGITS]
        items = await log.backend.get_range(prefix)
        for item in items:
            i = index_of_key(item.key)
            if i is None:
                scan.malformed.append((item.key, item.value))
            else:
                scan.feed(i, item.value)
        b += 1
        if not items and b * block >= upper:
            break
    scan.finish()


async def verify_log(
    log: AuditLog, verifier: NoteVerifier, external: list[tuple[str, str]] | None = None
) -> VerifyReport:
    """Verify the whole log; see the module docstring.

    Args:
        log: the audit log (its backend is read directly).
        verifier: the log's checkpoint key.
        external: ``(source, note)`` checkpoints from outside the backend: the witness copy
            and checkpoint files.

    Returns:
        The report; ``report.ok`` is False when anything was tampered with.
    """
    report = VerifyReport()
    await _collect(log, verifier, list(external or []), report)
    loaded = await load_leaves(log.backend)
    trusted = TrustedLeaves(loaded.hashes, loaded.ids, loaded.types)
    newest = max((c.size for c in report.checkpoints), default=0)
    bad = _check_tree(loaded.hashes, report.checkpoints)
    leaves_ok = bad is None
    scan = _Scan(newest, loaded.hashes if leaves_ok else None, bytearray(newest))
    await _scan(log, scan, max(newest, len(loaded.hashes)))
    report.events = scan.count
    report.verified = newest
    for key, value in scan.malformed:
        body = _peek(value)
        report.findings.append(
            Finding(
                "inserted",
                f"a record was inserted under {key} (id {body[0] or '?'}, type {body[1] or '?'}),"
                " which is no event index",
                None,
                *body,
            )
        )
    if leaves_ok:
        if scan.mismatched:
            head = TrustedLeaves(
                trusted.hashes[:newest], trusted.ids[:newest], trusted.types[:newest]
            )
            report.findings.extend(classify(head, scan.mismatched, scan.tail))
    else:
        _fallback(scan.ordered, report, bad)
    _check_tail(scan.tail, newest, report)
    if leaves_ok:
        _consistency(loaded.hashes, report)
    report.resources, unaudited = await unaudited_state(log.backend, scan.writes)
    report.findings.extend(unaudited)
    return report


def _peek(value: bytes) -> tuple[str, str]:
    try:
        body = json.loads(value)
    except ValueError:
        return "", ""
    return (
        (str(body.get("id", "")), str(body.get("type", ""))) if isinstance(body, dict) else ("", "")
    )


def _fallback(leaves: list[bytes], report: VerifyReport, bad: SignedCheckpoint | None) -> None:
    """The leaf records themselves do not match the signatures: check the events against the
    checkpoints directly and narrow the damage down to a range."""
    wrong = _check_tree(leaves, report.checkpoints)
    if wrong is None:
        report.findings.append(
            Finding(
                "checkpoint",
                "the leaf records were altered (the events themselves still match every "
                f"signed checkpoint; first disagreement at size {bad.size if bad else '?'})",
            )
        )
        return
    lower = max((c.size for c in report.checkpoints if c.size < wrong.size), default=0)
    report.findings.append(
        Finding(
            "checkpoint",
            f"the stored events do not match the signed checkpoint of size {wrong.size} "
            f"({wrong.source}); the last matching checkpoint is size {lower}: an event with "
            f"index {lower}..{wrong.size - 1} was modified, deleted, reordered or inserted, "
            "and the leaf records were altered too, so it cannot be named",
            lower,
        )
    )


def _check_tail(events: dict[int, bytes], newest: int, report: VerifyReport) -> None:
    """Events after the newest checkpoint: holes and index fields that disagree."""
    if not events:
        return
    top = max(events)
    unsigned = list(events)
    for i in range(newest, top + 1):
        value = events.get(i)
        if value is None:
            report.findings.append(
                Finding("gap", f"index {i} is missing (after the newest checkpoint)", i)
            )
            continue
        try:
            body = json.loads(value)
            index = body.get("index") if isinstance(body, dict) else None
        except ValueError:
            index = None
        if index != i:
            event_id, event_type = _peek(value)
            report.findings.append(
                Finding(
                    "reordered",
                    f"index {i} (id {event_id or '?'}, type {event_type or '?'}) holds an event "
                    f"whose own index is {index} (after the newest checkpoint)",
                    i,
                    event_id,
                    event_type,
                )
            )
    if unsigned:
        report.notes.append(
            f"{len(unsigned)} event(s) after the newest checkpoint (size {newest}) are not "
            "signed yet"
        )


def _consistency(leaves: list[bytes], report: VerifyReport) -> None:
    """Prove (RFC 9162 consistency proof) that each external checkpoint is a prefix of the
    newest checkpoint."""
    if not report.checkpoints:
        return
    newest = max(report.checkpoints, key=lambda c: c.size)
    for cp in report.checkpoints:
        if cp.source.startswith(("stored", "tree")):
            continue
        proof = consistency_between(leaves, cp, newest)
        if proof is None:
            report.findings.append(
                Finding(
                    "witness",
                    f"{cp.source} (size {cp.size}) is not consistent with the "
                    f"newest checkpoint (size {newest.size})",
                )
            )
        else:
            report.notes.append(
                f"{cp.source}: size {cp.size} verified; consistent with size {newest.size} "
                f"(consistency proof of {len(proof)} hashes)"
            )


def consistency_between(
    leaves: list[bytes], old: SignedCheckpoint, new: SignedCheckpoint
) -> list[bytes] | None:
    """A consistency proof from ``old`` to ``new`` over ``leaves``, verified; None when the
    leaves do not prove it."""
    if old.size > new.size or new.size > len(leaves):
        return None
    proof = consistency_proof(old.size, leaves[: new.size])
    ok = verify_consistency(old.size, new.size, old.root, new.root, proof)
    return proof if ok else None
