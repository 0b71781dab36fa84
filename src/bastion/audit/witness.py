"""External witness copies of the signed checkpoints: a file or an HTTP endpoint.

Layer: audit (IO edge). Whoever can write the backend could rewrite events, leaf records and the
stored checkpoints together; they cannot rewrite a checkpoint that already left the system. After
every checkpoint the auth server publishes the note to the witness configured as
``auth_service.audit.witness``:

* a file path: the latest note is written atomically (temporary file, fsync, rename) and only
  ever replaced by a note of an equal or larger tree, so the witness never goes backwards;
* an ``http://`` or ``https://`` URL: the note is POSTed (``text/plain``); ``verify`` GETs the same
  URL for the latest copy.

Publishing is best effort (a failure is logged and retried with the next checkpoint); verifying
reads the copy back and checks it like any other checkpoint.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Protocol

import aiohttp
import structlog

from bastion.errors import BadParameter, ConnectionProblem

__all__ = ["FileWitness", "HttpWitness", "Witness", "note_size", "open_witness"]

log = structlog.get_logger("bastion.audit.witness")
TIMEOUT = 10.0


class Witness(Protocol):
    location: str

    async def publish(self, note: str) -> None:
        """Hand over the latest checkpoint note. Raises ConnectionProblem on failure."""
        ...

    async def fetch(self) -> str | None:
        """The latest note held by the witness, None when it holds none yet."""
        ...


def note_size(note: str) -> int:
    """The tree size line of a checkpoint note (unverified), -1 when unreadable."""
    lines = note.split("\n")
    return int(lines[1]) if len(lines) > 2 and lines[1].isdigit() else -1


class FileWitness:
    def __init__(self, path: str) -> None:
        self.location = path
        self._path = Path(path).expanduser()

    def _write(self, note: str) -> None:
        current = self._read()
        if current is not None and note_size(current) > note_size(note):
            return  # never go backwards
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=self._path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(note)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self) -> str | None:
        try:
            return self._path.read_text()
        except FileNotFoundError:
            return None

    async def publish(self, note: str) -> None:
        try:
            await asyncio.to_thread(self._write, note)
        except OSError as exc:
            raise ConnectionProblem(f"cannot write the witness file {self._path}: {exc}") from exc

    async def fetch(self) -> str | None:
        try:
            return await asyncio.to_thread(self._read)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConnectionProblem(f"cannot read the witness file {self._path}: {exc}") from exc


class HttpWitness:
    def __init__(self, url: str) -> None:
        self.location = url

    async def publish(self, note: str) -> None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
                session.post(
                    self.location, data=note.encode(), headers={"Content-Type": "text/plain"}
                ) as resp,
            ):
                if resp.status >= 300:
                    raise ConnectionProblem(f"witness {self.location} answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionProblem(f"cannot reach the witness {self.location}: {exc}") from exc

    async def fetch(self) -> str | None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
                session.get(self.location) as resp,
            ):
                if resp.status == 404:
                    return None
                if resp.status >= 300:
                    raise ConnectionProblem(f"witness {self.location} answered {resp.status}")
                return await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionProblem(f"cannot reach the witness {self.location}: {exc}") from exc


def open_witness(location: str) -> Witness | None:
    """The witness for a configured location; None for an empty location.

    Raises:
        BadParameter: an unsupported URL scheme.
    """
    if not location:
        return None
    if location.startswith(("http://", "https://")):
        return HttpWitness(location)
    if "://" in location:
        raise BadParameter(f"witness {location!r}: use a file path or an http(s):// URL")
    return FileWitness(location)
