"""Moves finished recordings from the node's spool to auth, with retry and backoff.

Layer: node-side IO loop. Where the bytes go is an :class:`UploadTarget`: the auth API for a
node on another host (:class:`bastion.agent.remote.RemoteAuth`), or the recording service in
the same process for the all-in-one node. Outcomes:

* success (or "identical bytes stored already"): the spool files are removed;
* :class:`~bastion.errors.ConnectionProblem` (auth down, network): retried with jittered
  exponential backoff, 0.5 s doubling to 30 s, for as long as it takes; a newly finished
  recording wakes the loop at once;
* any other refusal (bad hash, not our session, too large): moved to ``failed/`` and logged, never
  retried (it would fail the same way forever).

At start the loop first recovers what a stopped node left (:meth:`Spool.recover`) and uploads
everything already spooled.

A short session's recording may skip the spool: handed over in memory (:meth:`Uploader.notify`
with its bytes, when :meth:`Uploader.can_hold` allows it: a target that takes bytes, at most
:data:`MEMORY_BUDGET` held), it is uploaded from there. One that cannot be stored at once
(auth unreachable, or refused) is spooled then and goes the way of the others. A process killed
before that loses it, as it would lose the last second of a longer session's recording.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import structlog

from bastion.errors import BastionError, ConnectionProblem
from bastion.recording.spool import Spool
from bastion.recording.store import RecordingMeta

__all__ = ["BytesTarget", "MEMORY_BUDGET", "SpooledTarget", "UploadTarget", "Uploader"]

log = structlog.get_logger("bastion.recording.uploader")
MIN_DELAY = 0.5
MAX_DELAY = 30.0
MEMORY_BUDGET = 16 << 20
"""Bytes of finished recordings an uploader holds in memory at most (the rest are spooled)."""


@runtime_checkable
class BytesTarget(Protocol):
    """A target that also stores a recording held in memory (the all-in-one node's
    :class:`~bastion.auth.recordings.InProcessTarget`): a short session's, never spooled."""

    async def upload_bytes(self, meta: RecordingMeta, data: bytes) -> None:
        """Like :meth:`UploadTarget.upload`, for the bytes themselves."""
        ...


@runtime_checkable
class SpooledTarget(Protocol):
    """A target that also removes the spool files once it stored them (in the same worker
    thread: the all-in-one node's :class:`~bastion.auth.recordings.InProcessTarget`)."""

    async def upload_spooled(
        self, meta: RecordingMeta, path: Path, remove: Callable[[], None]
    ) -> bool:
        """Like :meth:`UploadTarget.upload`; True when ``remove`` ran."""
        ...


class UploadTarget(Protocol):
    async def upload(self, meta: RecordingMeta, path: Path) -> None:
        """Deliver one recording.

        Raises:
            ConnectionProblem: try again later.
            BastionError: refused for good.
        """
        ...


async def _sleep_or_wake(wake: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await wake.wait()
    except TimeoutError:
        pass


class Uploader:
    """Args:
    spool: the node's spool.
    target: where recordings go.
    sleep: waits between retries (``(wake_event, seconds)``); tests pass a fake.
    """

    def __init__(
        self,
        spool: Spool,
        target: UploadTarget,
        *,
        sleep: Callable[[asyncio.Event, float], Awaitable[None]] = _sleep_or_wake,
    ) -> None:
        self.spool = spool
        self._target = target
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self.uploaded: list[str] = []
        self.failed: list[str] = []
        self.attempts = 0
        self._recovered = False
        self._failures = 0
        self._known: deque[RecordingMeta] = deque()
        """Finished recordings named by :meth:`notify`: uploaded without a scan of the spool."""
        self._scan = True
        """The spool may hold recordings not in :attr:`_known` (at start, after a failure)."""
        self._memory: dict[str, tuple[RecordingMeta, bytes]] = {}
        """Finished recordings held in memory (never spooled), by session id."""
        self._held = 0

    def can_hold(self, size: int) -> bool:
        """Whether a finished recording of ``size`` bytes may be handed over in memory
        (:meth:`notify` with its bytes) instead of being spooled."""
        return isinstance(self._target, BytesTarget) and self._held + size <= MEMORY_BUDGET

    def notify(self, meta: RecordingMeta | None = None, data: bytes | None = None) -> None:
        """A recording finished (``meta``: the one spooled, as :meth:`SpoolFile.finish`
        returned it, or the one whose bytes are ``data``, held in memory after
        :meth:`can_hold` allowed it; without it the spool is scanned): upload it now."""
        if meta is None:
            self._scan = True
        else:
            if data is not None:
                self._memory[meta.session_id] = (meta, data)
                self._held += len(data)
            self._known.append(meta)
        self._idle.clear()
        self._wake.set()

    def _pending(self) -> list[tuple[RecordingMeta, Path]]:
        """What to upload now: the whole spool after a scan was asked for, else only the
        recordings notified (no directory listing and metadata reads on the event loop)."""
        if self._scan:
            self._scan = False
            self._known.clear()
            held = [(m, self._cast(m)) for m, _ in self._memory.values()]
            return self.spool.ready() + held
        out = [(m, self._cast(m)) for m in self._known]
        self._known.clear()
        return out

    def _cast(self, meta: RecordingMeta) -> Path:
        return self.spool.directory / f"{meta.session_id}.cast"

    async def _deliver(self, meta: RecordingMeta, path: Path) -> None:
        """Upload, then remove the spool files (in the target's worker hop when it can)."""
        target = self._target
        held = self._memory.get(meta.session_id)
        if held is not None:
            if isinstance(target, BytesTarget):
                try:
                    await target.upload_bytes(meta, held[1])
                except BastionError:  # retried, or quarantined, from the spool
                    await self._spill(meta.session_id)
                    raise
                except OSError as exc:  # the store could not write it: retried from the spool
                    await self._spill(meta.session_id)
                    raise ConnectionProblem(f"cannot store the recording: {exc}") from None
                self._release(meta.session_id)
                return
            await self._spill(meta.session_id)  # this target takes files only
        if isinstance(target, SpooledTarget):
            if await target.upload_spooled(meta, path, lambda: self.spool.remove(meta.session_id)):
                return
        else:
            await target.upload(meta, path)
        # Off the event loop: an unlink waits for the filesystem's journal (ms under load).
        await asyncio.to_thread(self.spool.remove, meta.session_id)

    async def upload_ready(self) -> bool:
        """One pass over the spool. Returns False when auth was unreachable (retry later)."""
        pending = self._pending()
        for i, (meta, path) in enumerate(pending):
            self.attempts += 1
            try:
                await self._deliver(meta, path)
            except ConnectionProblem as exc:
                self._failures += 1
                # The first miss is usual (session.end still on its way to auth): info level.
                report = log.warning if self._failures > 1 else log.info
                report("cannot upload recording yet; will retry",
                       session_id=meta.session_id, error=str(exc))  # fmt: skip
                self._known.extendleft(reversed([m for m, _ in pending[i:]]))
                return False
            except FileNotFoundError:
                if path.exists():
                    raise
                continue  # notified and also found by a scan: uploaded already
            except BastionError as exc:
                log.error("auth refused a recording; moved to the spool's failed/ directory",
                          session_id=meta.session_id, error=str(exc))  # fmt: skip
                self.spool.quarantine(meta.session_id)
                self.failed.append(meta.session_id)
                continue
            self._failures = 0
            self.uploaded.append(meta.session_id)
            log.info("recording uploaded", session_id=meta.session_id, size=meta.size)
        return True

    def _release(self, session_id: str) -> bytes:
        _, data = self._memory.pop(session_id)
        self._held -= len(data)
        return data

    async def _spill(self, session_id: str) -> None:
        """Spool a recording held in memory (its upload failed); logged when it cannot be."""
        meta, _ = self._memory[session_id]
        data = self._release(session_id)
        try:
            await asyncio.to_thread(self.spool.save, meta, data)
        except OSError as exc:
            log.error("cannot spool a recording whose upload failed; it is lost",
                      session_id=session_id, error=str(exc))  # fmt: skip

    def recover(self) -> list[str]:
        """Finish what a stopped node left in the spool (once; before sessions can start, so
        no running recording is mistaken for a leftover)."""
        if self._recovered:
            return []
        self._recovered = True
        return self.spool.recover()

    async def run(self) -> None:
        """Recover (unless :meth:`recover` ran already), then upload until cancelled."""
        self.recover()
        delay = MIN_DELAY
        while True:
            self._wake.clear()
            if await self.upload_ready():
                delay = MIN_DELAY
                if not self._scan and not self._known:
                    self._idle.set()
                    await self._wake.wait()
                continue
            await self._sleep(self._wake, delay * (0.5 + random.random()))  # noqa: S311
            delay = min(delay * 2, MAX_DELAY)

    async def wait_idle(self) -> None:
        """Until the spool is empty (wrap in ``asyncio.timeout``)."""
        await self._idle.wait()
