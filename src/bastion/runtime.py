"""Process-level tuning of the daemon, applied once at start-up.

asyncio gives every TLS connection a 256 KiB read buffer (``bytearray``). With glibc's dynamic
mmap threshold those buffers soon come from the heap, where calloc must zero them, so each idle
connection costs 256 KiB of resident memory. Pinning the mmap threshold at 128 KiB makes such
buffers fresh mappings whose untouched pages are never resident: an idle connection then costs
only the pages it actually used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["tune_allocator"]

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def tune_allocator() -> bool:
    """Pin glibc's mmap threshold; returns False where that is not possible (not glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
