"""The node's local spool of recordings: written here first, uploaded to auth later.

Layer: node-side file IO (synchronous and short: called from the session data path).

Files in the spool directory (mode 0700), named by session id:

* ``<id>.json`` — :class:`~bastion.recording.store.RecordingMeta`, written when the session
  starts (so a crash still leaves who/where/when) and rewritten when it ends (sha256, size).
* ``<id>.cast.part`` — the recording while the session runs. Every event line is written
  through to the OS at once (a killed node process loses nothing); ``fsync`` runs at most once
  per :data:`FSYNC_INTERVAL` seconds while the session runs, and at its end (a power loss
  loses at most that long).
* ``<id>.cast`` — finished: ready to upload. Removed after auth confirmed it.
* ``failed/`` — recordings auth refused for good (kept for an operator, never retried).

:meth:`Spool.recover`, run once when the node starts, finishes ``.part`` files left by a node
that stopped mid-session: they are uploaded marked ``complete: false``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from bastion.errors import BadParameter
from bastion.files import fsync_dir, write_synced_file
from bastion.recording.store import RecordingMeta, check_session_id

__all__ = ["FSYNC_INTERVAL", "Spool", "SpoolFile"]

log = structlog.get_logger("bastion.recording.spool")
FSYNC_INTERVAL = 1.0
"""Seconds between fsyncs of a running recording."""


class SpoolFile:
    """One running recording. Not thread-safe; used from the event loop only."""

    def __init__(
        self,
        spool: Spool,
        meta: RecordingMeta,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spool = spool
        self.meta = meta
        self._monotonic = monotonic
        self.path = spool.directory / f"{meta.session_id}.cast.part"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._hash = hashlib.sha256()
        self.size = 0
        self._last_sync = monotonic()
        self.closed = False

    def write(self, data: bytes) -> None:
        """Append (straight to the OS: no user-space buffer to lose)."""
        if not data or self.closed:
            return
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._hash.update(data)
        self.size += len(data)
        now = self._monotonic()
        if now - self._last_sync >= FSYNC_INTERVAL:
            os.fsync(self._fd)
            self._last_sync = now

    def finish(self, meta: RecordingMeta) -> RecordingMeta:
        """fsync, close and mark ready for upload.

        Args:
            meta: the final metadata (end time); size and sha256 are filled in here.

        Returns:
            The metadata as spooled, with ``sha256`` (what ``session.end`` carries).
        """
        if self.closed:
            return self.meta
        os.fsync(self._fd)
        os.close(self._fd)
        self.closed = True
        self.meta = meta.model_copy(update={"size": self.size, "sha256": self._hash.hexdigest()})
        self._spool.mark_ready(self.meta, self.path)
        return self.meta

    def abort(self) -> None:
        """Close without finishing (left for :meth:`Spool.recover`)."""
        if not self.closed:
            os.close(self._fd)
            self.closed = True


class Spool:
    """The spool directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _meta_path(self, session_id: str) -> Path:
        return self.directory / f"{check_session_id(session_id)}.json"

    def open(
        self, meta: RecordingMeta, monotonic: Callable[[], float] = time.monotonic
    ) -> SpoolFile:
        """Start a recording: metadata first (durable), then the ``.part`` file."""
        meta.check()
        write_synced_file(self._meta_path(meta.session_id), meta.model_dump_json().encode())
        spooled = SpoolFile(self, meta, monotonic)
        fsync_dir(self.directory)  # one fsync for the metadata's rename and the .part
        return spooled

    def save(self, meta: RecordingMeta, data: bytes) -> None:
        """Spool a finished recording that was held in memory (a short session's whose upload
        failed, or a target that uploads only files): ready for upload, as
        :meth:`SpoolFile.finish` leaves one."""
        meta.check()
        part = self.directory / f"{meta.session_id}.cast.part"
        write_synced_file(part, data)
        self.mark_ready(meta, part)

    def mark_ready(self, meta: RecordingMeta, part: Path) -> None:
        """Final metadata, then ``.part`` → ``.cast``; one directory fsync makes both renames
        durable (a crash in between may leave a ``.cast`` beside the metadata of the start:
        :meth:`recover` finishes it)."""
        write_synced_file(self._meta_path(meta.session_id), meta.model_dump_json().encode())
        os.replace(part, self.directory / f"{meta.session_id}.cast")
        fsync_dir(self.directory)

    def recover(self) -> list[str]:
        """Finish recordings a stopped node left behind (``complete: false``).

        Call once at start, before sessions run. Returns the recovered session ids.
        """
        recovered = []
        for part in sorted(self.directory.glob("*.cast*")):
            if part.name.endswith(".cast.part"):
                session_id = part.name.removesuffix(".cast.part")
            elif part.name.endswith(".cast"):
                session_id = part.name.removesuffix(".cast")
            else:
                continue
            try:
                meta = RecordingMeta.parse(self._meta_path(session_id).read_bytes())
            except (OSError, BadParameter) as exc:
                if part.name.endswith(".part"):
                    log.error("spooled recording without metadata; left alone",
                              file=str(part), error=str(exc))  # fmt: skip
                continue
            if part.name.endswith(".cast") and meta.sha256:
                continue  # finished: waiting for its upload
            data = part.read_bytes()
            final = meta.model_copy(
                update={
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "complete": False,
                }
            )
            self.mark_ready(final, part)
            log.warning("recovered an unfinished recording", session_id=session_id)
            recovered.append(session_id)
        return recovered

    def ready(self) -> list[tuple[RecordingMeta, Path]]:
        """Finished recordings waiting for upload, oldest first."""
        out = []
        for cast in sorted(self.directory.glob("*.cast"), key=lambda p: p.stat().st_mtime):
            session_id = cast.name.removesuffix(".cast")
            try:
                meta = RecordingMeta.parse(self._meta_path(session_id).read_bytes())
            except (OSError, BadParameter):
                continue
            if meta.sha256:
                out.append((meta, cast))
        return out

    def remove(self, session_id: str) -> None:
        """Forget an uploaded recording."""
        (self.directory / f"{check_session_id(session_id)}.cast").unlink(missing_ok=True)
        self._meta_path(session_id).unlink(missing_ok=True)

    def quarantine(self, session_id: str) -> None:
        """Move a recording auth refused for good to ``failed/``."""
        failed = self.directory / "failed"
        failed.mkdir(exist_ok=True, mode=0o700)
        for path in (self.directory / f"{session_id}.cast", self._meta_path(session_id)):
            if path.exists():
                os.replace(path, failed / path.name)
