"""Processes as Linux ``/proc`` shows them, for benchmarks and tests.

Layer: testing. A zombie (exited, not reaped yet: an orphan waits for its new parent) counts
as gone: it runs nothing and holds no file.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["children_running", "running"]


def _stat(entry: Path) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name: state, ppid, ..."""
    return (entry / "stat").read_text().rpartition(")")[2].split()


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited."""
    try:
        return _stat(Path(f"/proc/{pid}"))[0] != "Z"
    except (OSError, IndexError):
        return False


def children_running(parent: int, module: str) -> list[int]:
    """The running children of ``parent`` whose command line names ``module`` (``python -m
    module ...``), in pid order."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = _stat(entry)[:2]
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if ppid == str(parent) and state != "Z" and module.encode() in cmdline.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)
