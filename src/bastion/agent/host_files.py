"""Replace the files of a host identity directory as one (a renewal's key, certificates and CAs).

Layer: agent (files only). Each file is written atomically on its own
(:func:`bastion.files.write_private_file`), but a renewal changes several that must match (the
key and its certificates). So a new set is first written, fsynced, into ``DIR/.renewing/``; a
``COMMIT`` file listing the names is the commit point; then each file is renamed into ``DIR``
and the staging directory removed. A crash before the commit leaves the old identity whole (the
stage is discarded); after it, :func:`finish_pending` (run by ``load_host_identity``) completes
the renames. Readers in the process are told of the new identity only once it is complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from bastion.files import fsync_dir, write_durable_file

__all__ = ["STAGE", "finish_pending", "replace_files"]

STAGE = ".renewing"
COMMIT = "COMMIT"


def replace_files(directory: Path, files: Mapping[str, str | bytes]) -> None:
    """Write ``files`` (name -> content, mode 0600) into ``directory``: all or none."""
    stage = directory / STAGE
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(mode=0o700, parents=True)
    for name, data in files.items():
        if "/" in name or name in ("", ".", "..", COMMIT):
            raise ValueError(f"bad identity file name {name!r}")
        write_durable_file(stage / name, data)
    write_durable_file(stage / COMMIT, "".join(f"{name}\n" for name in files))
    finish_pending(directory)


def finish_pending(directory: Path) -> None:
    """Complete (after the commit point) or discard (before it) an interrupted replacement."""
    stage = directory / STAGE
    if not stage.is_dir():
        return
    commit = stage / COMMIT
    if commit.is_file():
        for name in commit.read_text().split():
            staged = stage / name
            if staged.exists():  # absent: moved by the run that was interrupted
                os.replace(staged, directory / name)
        fsync_dir(directory)
    shutil.rmtree(stage, ignore_errors=True)
