"""Writing secrets to disk: atomically, with mode 0600, in a 0700 directory."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_private_file"]


def write_private_file(path: Path, data: bytes | str) -> None:
    """Write atomically with mode 0600 (keys, certificates, secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
