"""Writing files that must survive: atomically, with mode 0600, in a 0700 directory.

Secrets, cursors, spool metadata and checkpoints all need the same steps (temporary file,
rename over the old one); state that must survive a power cut also fsyncs the file and the
directory that names it. Every client write of a file that may hold a secret (profile keys and
certificates, identity files, software authenticator credentials, downloaded recordings) goes
through :func:`write_private_file`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "write_durable_file", "write_private_file", "write_synced_file"]


def fsync_dir(directory: Path) -> None:
    """Make a rename or create inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_file(
    path: Path,
    data: bytes | str,
    *,
    durable: bool = False,
    parents: bool = True,
    sync_dir: bool = True,
) -> None:
    """Write atomically with mode 0600: keys, certificates, secrets, and anything a user may
    not want others on the machine to read (recordings hold what was typed and shown).

    The bytes go to a new temporary file beside ``path`` (created exclusively, mode 0600 from
    the start, so no other user can open it, whatever was there before), which then replaces
    ``path`` by rename: readers see the old file or the new one, never a partial one, and the
    result is 0600 even when ``path`` existed with a wider mode. A symlink at ``path`` is
    replaced, not followed.

    Args:
        durable: fsync the bytes and the rename before returning.
        parents: create a missing directory (0700); False leaves that an error (a path the
            user typed, where a typo should not create directories).
        sync_dir: with ``durable``, also fsync the directory (False: the caller does, once
            for several renames there).

    Raises:
        OSError: the directory or the file cannot be written (the temporary file is removed).
    """
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)  # mkstemp's mode already; say it, whatever the OS
            fh.write(data.encode() if isinstance(data, str) else data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable and sync_dir:
        fsync_dir(path.parent)


def write_durable_file(path: Path, data: bytes | str) -> None:
    """Atomic, mode 0600 and fsynced (file and directory): cursors, spool metadata."""
    write_private_file(path, data, durable=True)


def write_synced_file(path: Path, data: bytes | str) -> None:
    """Like :func:`write_durable_file` in a directory that exists, without the directory's
    fsync: the bytes are fsynced before the rename, and the caller makes the rename durable
    with one :func:`fsync_dir` that also covers its other renames and creates there (until
    then a crash may leave the old file, never a partial one).

    Raises:
        OSError: the file cannot be written (the temporary file is removed).
    """
    write_private_file(path, data, durable=True, parents=False, sync_dir=False)
