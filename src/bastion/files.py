"""Writing files that must survive: atomically, with mode 0600, in a 0700 directory.

Secrets, cursors, spool metadata and checkpoints all need the same steps (temporary file,
rename over the old one); state that must survive a power cut also fsyncs the file and the
directory that names it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "write_durable_file", "write_private_file"]


def fsync_dir(directory: Path) -> None:
    """Make a rename or create inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes | str, *, durable: bool = False) -> None:
    """Write atomically with mode 0600 (keys, certificates, secrets).

    With ``durable`` the bytes and the rename are fsynced before returning.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def write_durable_file(path: Path, data: bytes | str) -> None:
    """Atomic, mode 0600 and fsynced (file and directory): cursors, spool metadata."""
    write_private_file(path, data, durable=True)
