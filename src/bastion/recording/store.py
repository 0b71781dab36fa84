"""Where auth keeps session recordings: the :class:`RecordingStore` interface, its metadata
model, and the local-directory implementation (the default, under the auth data dir).

Layer: storage adapter. A recording is two objects named by the session id: ``<id>.cast`` (the
asciicast bytes) and ``<id>.json`` (:class:`RecordingMeta`). The metadata is written last, so a
recording is listed only once its bytes are complete. Recordings are immutable: a second
``put`` of the same id is refused (the caller decides whether identical bytes mean success).

:mod:`bastion.recording.s3` implements the same interface on S3-compatible object storage;
:func:`bastion.recording.factory.open_store` picks one from the configuration.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import Field, ValidationError

from bastion.errors import AlreadyExists, BadParameter, NotFound
from bastion.files import fsync_dir
from bastion.types.meta import StrictModel

if TYPE_CHECKING:
    pass

__all__ = [
    "LocalRecordingStore",
    "RecordingMeta",
    "RecordingStore",
    "Sink",
    "check_session_id",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


def check_session_id(value: str) -> str:
    """The session id in canonical form; it names files and objects, so nothing else passes.

    Raises:
        BadParameter: not a canonical (lower-case, hyphenated) UUID.
    """
    try:
        canonical = str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        canonical = ""
    if canonical != value:
        raise BadParameter(f"invalid session id {value!r}: expected a UUID")
    return value


class RecordingMeta(StrictModel):
    """What is known about one recording (listed by ``bsh recordings ls``)."""

    session_id: str
    user: str
    """The Bastion user whose session it is."""
    login: str = ""
    node: str = ""
    cluster: str = ""
    kind: str = "shell"
    command: str = ""
    started: datetime | None = None
    ended: datetime | None = None
    size: int = Field(default=0, ge=0)
    sha256: str = ""
    """Hex SHA-256 of the recording bytes, as in the ``session.end`` event."""
    input_recorded: bool = False
    complete: bool = True
    """False when the node restarted mid-session and uploaded what it had spooled."""
    uploaded: datetime | None = None

    def check(self) -> RecordingMeta:
        """Validate the fields that name things.

        Raises:
            BadParameter: a bad session id or SHA-256.
        """
        check_session_id(self.session_id)
        if self.sha256 and not _SHA256.match(self.sha256):
            raise BadParameter("sha256 must be 64 lower-case hex digits")
        return self

    @classmethod
    def parse(cls, data: bytes | str) -> RecordingMeta:
        """Parse stored or uploaded metadata.

        Raises:
            BadParameter: not valid metadata.
        """
        try:
            return cls.model_validate(json.loads(data)).check()
        except (ValueError, ValidationError) as exc:
            raise BadParameter(f"invalid recording metadata: {exc}") from None


class Sink(Protocol):
    """Where :meth:`RecordingStore.copy_to` writes (a binary file, a hashing wrapper)."""

    def write(self, data: bytes, /) -> object: ...


class RecordingStore(Protocol):
    """Storage of finished recordings."""

    async def put(self, meta: RecordingMeta, source: Path) -> None:
        """Store the bytes of ``source`` and then ``meta``.

        Raises:
            AlreadyExists: a recording with this session id is stored already.
        """
        ...

    async def meta(self, session_id: str) -> RecordingMeta:
        """Raises: NotFound."""
        ...

    async def read(self, session_id: str) -> bytes:
        """The recording's bytes. Raises: NotFound."""
        ...

    async def copy_to(self, session_id: str, sink: Sink) -> None:
        """Write the recording's bytes to ``sink`` in chunks (bounded memory; runs in a worker
        thread). Raises: NotFound."""
        ...

    async def list(self) -> list[RecordingMeta]:
        """Every stored recording, oldest first."""
        ...


def _sort(items: list[RecordingMeta]) -> list[RecordingMeta]:
    return sorted(items, key=lambda m: (m.started.timestamp() if m.started else 0, m.session_id))


class LocalRecordingStore:
    """Recordings in one directory (mode 0700, files 0600), written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._made = False
        """The directory was created (or found) once: not asked again per recording."""

    def _path(self, session_id: str, suffix: str) -> Path:
        return self.directory / f"{check_session_id(session_id)}{suffix}"

    def _put(self, meta: RecordingMeta, source: Path | bytes, link: bool = False) -> None:
        if not self._made:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._made = True
        try:
            self._store(meta, source, link)
        except FileNotFoundError:
            if self.directory.is_dir():
                raise
            self._made = False  # the directory was removed since: create it again
            self._put(meta, source, link)

    def _store(self, meta: RecordingMeta, source: Path | bytes, link: bool) -> None:
        final = self._path(meta.session_id, ".json")
        if final.exists():
            raise AlreadyExists(f"recording {meta.session_id} is stored already")
        cast = self._path(meta.session_id, ".cast")
        if not (link and isinstance(source, Path) and self._link(source, cast)):
            self._write(cast, source)
        self._write(final, meta.model_dump_json().encode())
        fsync_dir(self.directory)  # both renames (or the link and a rename) at once

    def _write(self, path: Path, content: Path | bytes) -> None:
        """``content`` into ``path`` by a fsynced temporary file and a rename."""
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            if isinstance(content, Path):
                with content.open("rb") as src:
                    shutil.copyfileobj(src, out)
            else:
                out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)

    def _link(self, source: Path, cast: Path) -> bool:
        """Store ``source`` (fsynced already, never written again) by a hard link: no copy, no
        fsync of the bytes (the directory's fsync makes the new name durable). False when
        it cannot (another filesystem, links not supported): copy it then."""
        try:
            try:
                os.link(source, cast)
            except FileExistsError:  # bytes of an earlier put that crashed before its metadata
                cast.unlink()
                os.link(source, cast)
        except OSError:
            return False
        return True

    async def put(self, meta: RecordingMeta, source: Path) -> None:
        await asyncio.to_thread(self._put, meta.check(), source)

    def put_now(self, meta: RecordingMeta, source: Path | bytes) -> None:
        """Like :meth:`put`, synchronously (call it from a worker thread): a copy of the file
        ``source`` or the bytes ``source``, fsynced.

        Raises:
            AlreadyExists: a recording with this session id is stored already.
        """
        self._put(meta.check(), source)

    def put_durable_file(self, meta: RecordingMeta, source: Path) -> None:
        """Like :meth:`put_now`, for a local file that is fsynced already and never written
        again (the all-in-one node's spool): stored by a hard link when it is on the same
        filesystem, copied otherwise. The caller may remove ``source`` afterwards (the stored
        name keeps the bytes).

        Raises:
            AlreadyExists: a recording with this session id is stored already.
        """
        self._put(meta.check(), source, link=True)

    async def meta(self, session_id: str) -> RecordingMeta:
        path = self._path(session_id, ".json")
        try:
            return RecordingMeta.parse(await asyncio.to_thread(path.read_bytes))
        except FileNotFoundError:
            raise NotFound(f"no recording of session {session_id}") from None

    async def read(self, session_id: str) -> bytes:
        await self.meta(session_id)  # only complete recordings are readable
        try:
            return await asyncio.to_thread(self._path(session_id, ".cast").read_bytes)
        except FileNotFoundError:
            raise NotFound(f"no recording of session {session_id}") from None

    async def copy_to(self, session_id: str, sink: Sink) -> None:
        await self.meta(session_id)

        def copy() -> None:
            with self._path(session_id, ".cast").open("rb") as src:
                shutil.copyfileobj(src, sink, CHUNK)

        try:
            await asyncio.to_thread(copy)
        except FileNotFoundError:
            raise NotFound(f"no recording of session {session_id}") from None

    def _list(self) -> list[RecordingMeta]:
        out = []
        for path in self.directory.glob("*.json"):
            try:
                out.append(RecordingMeta.parse(path.read_bytes()))
            except (OSError, BadParameter):
                continue  # a foreign or damaged file is not a recording
        return _sort(out)

    async def list(self) -> list[RecordingMeta]:
        if not self.directory.is_dir():
            return []
        return await asyncio.to_thread(self._list)
