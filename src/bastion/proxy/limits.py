"""Limits on connections that have not authenticated yet (ARCHITECTURE.md 6.5).

Layer: ``proxy`` (pure bookkeeping, no IO, no clock). The listener calls :meth:`acquire` when it
accepts a socket and :meth:`release` once the connection either authenticated (TLS handshake
done and the peer verified) or ended. Authenticated connections are not counted: the limits only
bound what an anonymous client can hold (junk, slowloris), so real logins never queue behind them.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_MAX_PER_IP", "DEFAULT_MAX_TOTAL", "UnauthenticatedLimiter"]

DEFAULT_MAX_PER_IP: Final = 64
DEFAULT_MAX_TOTAL: Final = 4096


class UnauthenticatedLimiter:
    """Counts not-yet-authenticated connections per source IP and in total.

    Args:
        max_per_ip: concurrent unauthenticated connections one IP may hold.
        max_total: concurrent unauthenticated connections over all IPs.

    Raises:
        ValueError: a limit below 1.
    """

    def __init__(
        self, max_per_ip: int = DEFAULT_MAX_PER_IP, max_total: int = DEFAULT_MAX_TOTAL
    ) -> None:
        if max_per_ip < 1 or max_total < 1:
            raise ValueError("connection limits must be at least 1")
        self.max_per_ip = max_per_ip
        self.max_total = max_total
        self._per_ip: dict[str, int] = {}
        self._total = 0

    def acquire(self, ip: str) -> bool:
        """Count one more connection from ``ip``; False (nothing counted) when over a limit."""
        count = self._per_ip.get(ip, 0)
        if count >= self.max_per_ip or self._total >= self.max_total:
            return False
        self._per_ip[ip] = count + 1
        self._total += 1
        return True

    def release(self, ip: str) -> None:
        """Forget one connection from ``ip`` (a release without acquire is ignored)."""
        count = self._per_ip.get(ip, 0)
        if count <= 0:
            return
        if count == 1:
            del self._per_ip[ip]  # keep the map as small as the live set
        else:
            self._per_ip[ip] = count - 1
        self._total -= 1

    def count(self, ip: str) -> int:
        """Unauthenticated connections ``ip`` holds now."""
        return self._per_ip.get(ip, 0)

    @property
    def total(self) -> int:
        """Unauthenticated connections over all IPs."""
        return self._total
