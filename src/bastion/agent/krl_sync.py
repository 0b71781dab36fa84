"""``bbot krl-sync``: keep an agentless OpenSSH node's ``RevokedKeys`` file current.

Layer: agent edge (IO: one API call and two files per round; the checks are pure functions).
Each round fetches ``GET /v1/ca/krl`` with the node's joined host identity, and accepts the KRL
only when

1. its detached SSHSIG signature verifies under a *trusted user CA key of this node* (by default
   the identity's ``user_ca.pub``, or the file sshd names in ``TrustedUserCAKeys``),
2. it parses as a KRL (:func:`bastion.ca.krl.parse_krl`) whose version is the one announced, and
3. its version is not lower than the KRL already on disk (no rollback to a KRL that still let a
   locked user in).

It then replaces the file atomically (sshd re-reads it on every authentication, no reload) and
writes a JSON status file. A failed round keeps the last good KRL, logs the error, and the status
says how old the KRL is; once the age passes ``STALE_PERIODS`` periods every round logs an
error saying so. The age is measured from the KRL file's modification time, so it survives
restarts. Before the first successful sync there is no file, and sshd then refuses *every* key
(OpenSSH fails closed on an unreadable ``RevokedKeys``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from bastion.ca.keys import PublicKey, load_public_key
from bastion.ca.krl import KRL, parse_krl, verify_krl_signature
from bastion.errors import AccessDenied, BadParameter, BastionError, RemoteProtocolError
from bastion.files import write_private_file

__all__ = [
    "STALE_PERIODS",
    "KrlSync",
    "SyncStatus",
    "check_published",
    "load_trusted_keys",
]

log = structlog.get_logger("bastion.agent.krl_sync")
STALE_PERIODS = 3
"""A KRL older than this many sync periods is reported as stale."""


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """What the status file says (JSON); times are ISO 8601 UTC."""

    path: str
    ok: bool
    """The last round succeeded."""
    version: int | None
    generated: str | None
    fetched_at: str | None
    """When the KRL on disk was written (its modification time)."""
    age_seconds: float | None
    max_age_seconds: float
    stale: bool
    checked_at: str
    last_error: str = ""
    key_ids: tuple[str, ...] = ()
    unenforced_locks: tuple[str, ...] = ()


def load_trusted_keys(text: str) -> list[PublicKey]:
    """The keys of an OpenSSH public key file (``TrustedUserCAKeys``, ``user_ca.pub``).

    Raises:
        BadParameter: no usable key in the file.
    """
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(load_public_key(line))
    if not keys:
        raise BadParameter("the trusted user CA file holds no key")
    return keys


def check_published(
    doc: Any, trusted: Sequence[PublicKey], current: KRL | None
) -> tuple[bytes, KRL]:
    """Validate a ``GET /v1/ca/krl`` answer; pure.

    Returns:
        The KRL bytes and their parsed form.

    Raises:
        AccessDenied: bad or untrusted signature, or an older version than ``current``.
        RemoteProtocolError: not a well-formed answer or KRL.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("krl"), str):
        raise RemoteProtocolError("the auth server's KRL answer has no 'krl' field")
    try:
        data = base64.b64decode(doc["krl"], validate=True)
    except (binascii.Error, ValueError):
        raise RemoteProtocolError("the KRL is not valid base64") from None
    verify_krl_signature(data, str(doc.get("signature", "")), trusted)
    krl = parse_krl(data)
    if doc.get("version") != krl.version:
        raise RemoteProtocolError("the KRL's version differs from the announced one")
    if current is not None and krl.version < current.version:
        raise AccessDenied(
            f"refusing KRL version {krl.version}: older than version {current.version} on disk"
        )
    return data, krl


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


class KrlSync:
    """One node's sync loop. ``fetch`` performs the API call (injected for tests)."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Any]],
        trusted: Sequence[PublicKey],
        out: Path,
        status: Path | None,
        period: float,
        now: Callable[[], float] = time.time,
    ) -> None:
        if period <= 0:
            raise BadParameter("--period must be positive")
        self._fetch = fetch
        self._trusted = list(trusted)
        self.out = out
        self.status_path = status
        self.period = period
        self._now = now
        self._meta: dict[str, Any] = {}

    def _current(self) -> tuple[KRL | None, float | None]:
        try:
            data, mtime = self.out.read_bytes(), self.out.stat().st_mtime
        except FileNotFoundError:
            return None, None
        try:
            return parse_krl(data), mtime
        except RemoteProtocolError:
            return None, mtime  # not ours (or damaged): replace it, no rollback check

    async def sync_once(self) -> SyncStatus:
        """Fetch, check and install one KRL; never raises for a failed round (see ``ok``)."""
        error = ""
        try:
            current, _ = self._current()
            doc = await self._fetch()
            data, krl = check_published(doc, self._trusted, current)
            write_private_file(self.out, data)
            stamp = self._now()
            os.utime(self.out, (stamp, stamp))  # the file's mtime is the fetch time
            self._meta = {
                "key_ids": tuple(doc.get("key_ids") or ()),
                "unenforced_locks": tuple(doc.get("unenforced_locks") or ()),
            }
            log.info("krl installed", path=str(self.out), version=krl.version)
        except (BastionError, OSError) as exc:
            error = str(exc) or type(exc).__name__
        status = self.status(error)
        if error:
            log.error("krl sync failed; keeping the last KRL", error=error, age=status.age_seconds)
        if status.stale:
            log.error(
                "KRL IS STALE: locks newer than it are not enforced by this sshd",
                path=str(self.out),
                age_seconds=status.age_seconds,
                max_age_seconds=status.max_age_seconds,
            )
        self._write_status(status)
        return status

    def status(self, error: str = "") -> SyncStatus:
        krl, mtime = self._current()
        now = self._now()
        age = None if mtime is None else max(0.0, now - mtime)
        max_age = STALE_PERIODS * self.period
        return SyncStatus(
            path=str(self.out),
            ok=not error,
            version=krl.version if krl else None,
            generated=_iso(krl.generated) if krl else None,
            fetched_at=_iso(mtime),
            age_seconds=None if age is None else round(age, 3),
            max_age_seconds=max_age,
            stale=krl is None or age is None or age > max_age,
            checked_at=_iso(now) or "",
            last_error=error,
            key_ids=tuple(self._meta.get("key_ids", ())),
            unenforced_locks=tuple(self._meta.get("unenforced_locks", ())),
        )

    def _write_status(self, status: SyncStatus) -> None:
        if self.status_path is None:
            return
        body = json.dumps(asdict(status), indent=2) + "\n"
        tmp = self.status_path.with_name(self.status_path.name + ".tmp")
        try:
            tmp.write_text(body)
            os.replace(tmp, self.status_path)
        except OSError as exc:
            log.error(
                "cannot write the KRL status file", path=str(self.status_path), error=str(exc)
            )

    async def run_forever(self) -> None:
        """Sync every ``period`` seconds until cancelled."""
        while True:
            await self.sync_once()
            await asyncio.sleep(self.period)
