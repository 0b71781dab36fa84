"""Signed checkpoints of the audit log: fold new events into the tree, sign, store, witness.

Layer: audit (IO over the backend and the witness). A checkpoint run reads the events after the
stored tree state in index order, appends their leaf hashes (``SHA-256(0x00 || canonical JSON)``)
to the right frontier (O(log n) per event, history is never re-hashed), records the leaf hashes
(:class:`~bastion.audit.tree.LeafChunk`), signs ``<origin>\\n<size>\\n<base64 root>\\n`` as a
C2SP note, moves the tree state forward by compare-and-swap (a second auth server doing the same
loses the swap and retries from the winner's state), stores the note under
``audit/checkpoints/<size>`` and publishes it to the witness.

It fails closed: an event whose body disagrees with its index, or a leaf record that disagrees
with the events, stops checkpointing with an error (``bctl audit verify`` then names the event).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

import structlog

from bastion.audit.log import AuditLog, event_key, index_of_key
from bastion.audit.merkle import CompactRange, inclusion_proof, leaf_hash, root
from bastion.audit.note import Checkpoint, format_checkpoint, parse_checkpoint
from bastion.audit.signer import CheckpointSigner
from bastion.audit.tree import (
    CHUNK,
    STATE_KEY,
    LeafChunk,
    TreeState,
    checkpoint_key,
    chunk_key,
    load_leaves,
)
from bastion.audit.witness import Witness
from bastion.backend.base import Item
from bastion.clock import Clock
from bastion.errors import AlreadyExists, BadParameter, BastionError, CompareFailed, NotFound

__all__ = ["Checkpointer", "load_state"]

log = structlog.get_logger("bastion.audit.checkpoint")
ATTEMPTS = 8
FOLD_SLICE = 128
"""Events folded into the tree between two returns to the event loop: a checkpoint after a
busy interval folds tens of thousands of events (~15 us each: parse, hash, append), which in
one go would hold every connection of the process for a second in 15-ms stalls."""


async def load_state(log_: AuditLog) -> tuple[Item | None, TreeState]:
    """The stored tree state (and its item for compare-and-swap); empty before the first run."""
    try:
        item = await log_.backend.get(STATE_KEY)
    except NotFound:
        return None, TreeState()
    return item, TreeState.decode(item.value)


class Checkpointer:
    def __init__(
        self,
        audit: AuditLog,
        signer: CheckpointSigner,
        clock: Clock,
        witness: Witness | None = None,
    ) -> None:
        self._log = audit
        self._backend = audit.backend
        self._signer = signer
        self._clock = clock
        self._witness = witness
        self._lock = asyncio.Lock()
        self._witnessed = -1
        """Tree size last handed to the witness successfully."""

    @property
    def signer(self) -> CheckpointSigner:
        return self._signer

    async def checkpoint(self) -> str:
        """Bring the tree up to the head of the log, sign it and publish it.

        Returns:
            The latest signed checkpoint note (unchanged when no event was added).

        Raises:
            BadParameter: the log or its leaf records were tampered with (nothing signed).
            CompareFailed: lost the race to other checkpointers too often (try again).
        """
        async with self._lock:
            for _ in range(ATTEMPTS):
                item, state = await load_state(self._log)
                frontier = state.frontier.copy()
                await self._catch_up(frontier)
                if frontier.size == state.size and state.note:
                    note = state.note
                    break
                text = format_checkpoint(
                    Checkpoint(self._signer.name, frontier.size, frontier.root())
                )
                new = TreeState(frontier, self._signer.sign(text), self._clock.now().isoformat())
                try:
                    if item is None:
                        await self._backend.create(Item(STATE_KEY, new.encode()))
                    else:
                        await self._backend.compare_and_swap(item, Item(STATE_KEY, new.encode()))
                except (CompareFailed, AlreadyExists):
                    continue  # another checkpointer moved the state: start from theirs
                with contextlib.suppress(AlreadyExists):
                    await self._backend.create(Item(checkpoint_key(new.size), new.note.encode()))
                note = new.note
                log.info("audit_checkpoint", size=new.size)
                break
            else:
                raise CompareFailed("could not move the audit tree state; try again")
        await self._publish(note)
        return note

    async def _publish(self, note: str) -> None:
        size = int(note.split("\n")[1])
        if self._witness is None or size == self._witnessed:
            return
        try:
            await self._witness.publish(note)
        except BastionError as exc:
            log.warning("audit_witness_failed", witness=self._witness.location, error=exc.message)
            return
        self._witnessed = size

    async def _catch_up(self, frontier: CompactRange) -> None:
        """Append every contiguous event after ``frontier.size``, writing leaf records.

        The events this process stored are folded from what its writer remembered (the leaf
        hash of the very bytes it committed, their id and type), without reading them back;
        the others (another process's, or forgotten) are read, hashed and parsed. So the
        tree commits to what the writer wrote: a stored event changed behind it afterwards
        no longer matches its signed leaf, which ``bctl audit verify`` reports."""
        pos = frontier.size
        stored_leaf = self._log.stored_leaf
        chunk = await self._open_chunk(pos)
        while True:
            end = chunk.start + CHUNK
            added = 0
            while pos < end:
                known = stored_leaf(pos)
                if known is None:
                    break
                if added and not added % FOLD_SLICE:
                    await asyncio.sleep(0)  # let the proxy's connections run between slices
                chunk.hashes.append(known[0])
                chunk.ids.append(known[1])
                chunk.types.append(known[2])
                frontier.append(known[0])
                pos += 1
                added += 1
            # Exactly this chunk's range: read_items would go on past a short read (a batch
            # being stored right now) and show the chunk's end as a hole.
            items = await self._log.read_range(pos, end) if pos < end else []
            for item in items:
                if added and not added % FOLD_SLICE:
                    await asyncio.sleep(0)
                if index_of_key(item.key) != pos:
                    log.error(  # checkpoints cannot pass a hole; verify names what is missing
                        "audit_log_hole", missing=pos, next_stored=index_of_key(item.key)
                    )
                    break
                h = leaf_hash(item.value)
                known = stored_leaf(pos)
                if known is not None and known[0] == h:
                    event_id, event_type = known[1], known[2]
                else:
                    event_id, event_type = _identify(item.value, pos)
                chunk.hashes.append(h)
                chunk.ids.append(event_id)
                chunk.types.append(event_type)
                frontier.append(h)
                pos += 1
                added += 1
            if not added:
                return
            await self._save_chunk(chunk)
            if chunk.end < end:
                return  # the head (or a hole) is inside this chunk
            chunk = LeafChunk(chunk.end, [], [], [])

    async def _open_chunk(self, pos: int) -> LeafChunk:
        """The leaf record that index ``pos`` falls in, trimmed to the leaves before ``pos``."""
        start = pos - pos % CHUNK
        if pos == start:
            return LeafChunk(start, [], [], [])
        try:
            chunk = LeafChunk.decode((await self._backend.get(chunk_key(start))).value)
        except NotFound:
            chunk = LeafChunk(start, [], [], [])
        keep = pos - start
        if chunk.start != start or len(chunk.hashes) < keep:
            raise BadParameter(
                f"the leaf record at {start} lost leaves the signed tree covers; the log was "
                "tampered with: run bctl audit verify"
            )
        return LeafChunk(start, chunk.hashes[:keep], chunk.ids[:keep], chunk.types[:keep])

    async def _save_chunk(self, chunk: LeafChunk) -> None:
        """Write the leaf record; it only ever grows, and must agree with what is stored."""
        key = chunk_key(chunk.start)
        for _ in range(ATTEMPTS):
            try:
                existing = await self._backend.get(key)
            except NotFound:
                try:
                    await self._backend.create(Item(key, chunk.encode()))
                    return
                except AlreadyExists:
                    continue
            old = LeafChunk.decode(existing.value)
            n = min(len(old.hashes), len(chunk.hashes))
            if old.hashes[:n] != chunk.hashes[:n]:
                bad = next(i for i in range(n) if old.hashes[i] != chunk.hashes[i])
                raise BadParameter(
                    f"event {chunk.start + bad} no longer matches its leaf record; the log was "
                    "tampered with: run bctl audit verify"
                )
            if len(old.hashes) >= len(chunk.hashes):
                return
            try:
                await self._backend.compare_and_swap(existing, Item(key, chunk.encode()))
                return
            except CompareFailed:
                continue
        raise CompareFailed(f"could not write the leaf record {key}; try again")

    async def inclusion(self, *, index: int | None = None, event_id: str = "") -> dict[str, Any]:
        """An RFC 9162 inclusion proof for one event against a fresh signed checkpoint.

        Returns:
            ``{index, id, type, event, leaf_hash, tree_size, root, proof, checkpoint}`` (hashes
            base64; ``event`` is the stored canonical JSON, parsed).

        Raises:
            NotFound: no such event.
            BadParameter: the leaf records do not match the signed root (tampering).
        """
        note = await self.checkpoint()
        cp = parse_checkpoint(note.split("\n\n")[0] + "\n")
        leaves = await load_leaves(self._backend)
        if event_id:
            try:
                index = leaves.ids.index(event_id, 0, cp.size)
            except ValueError:
                raise NotFound(f"no audit event with id {event_id!r} in the log") from None
        if index is None or not 0 <= index < cp.size:
            raise NotFound(f"no audit event at index {index} (the log has {cp.size})")
        hashes = leaves.hashes[: cp.size]
        if len(hashes) < cp.size or root(hashes) != cp.root:
            raise BadParameter("the leaf records do not match the signed checkpoint: run verify")
        value = (await self._backend.get(event_key(index))).value
        return {
            "index": index,
            "id": leaves.ids[index],
            "type": leaves.types[index],
            "event": json.loads(value),
            "leaf_hash": _b64(hashes[index]),
            "tree_size": cp.size,
            "root": _b64(cp.root),
            "proof": [_b64(h) for h in inclusion_proof(index, hashes)],
            "checkpoint": note,
        }

    async def run_forever(self, interval: float) -> None:
        """Checkpoint every ``interval`` seconds (only signs when the log grew)."""
        while True:
            try:
                await self.checkpoint()
            except BastionError as exc:  # keep going; CancelledError still stops the loop
                log.error("audit_checkpoint_failed", error=exc.message)
            await asyncio.sleep(interval)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _identify(value: bytes, index: int) -> tuple[str, str]:
    """(id, type) of a stored event, checking its body names ``index``.

    Raises:
        BadParameter: unreadable, or its index field disagrees with its position.
    """
    try:
        body = json.loads(value)
        ok = isinstance(body, dict) and body.get("index") == index
    except ValueError:
        ok = False
    if not ok:
        raise BadParameter(
            f"the event stored at index {index} is unreadable or names another index; the log "
            "was tampered with: run bctl audit verify"
        )
    return str(body.get("id", "")), str(body.get("type", ""))
