"""LiveRegistry: every live connection with the identity behind it, and a way to end it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from bastion.types.identity import Identity

__all__ = ["LiveConnection", "LiveRegistry", "Terminator"]

Terminator = Callable[[str], Awaitable[None]]
"""Ends the connection; the argument is the reason shown to the user and audited."""


@dataclass(slots=True)
class LiveConnection:
    kind: str
    """``ssh`` (client through the proxy), ``ssh_session`` (a session on a node), ``tunnel``
    (an agent's reverse tunnel), ``port_forward``, later ``db`` and ``app``."""
    identity: Identity
    target: str
    """Node name (or host id for tunnels)."""
    login: str = ""
    remote_addr: str = ""
    session_id: str = ""
    cert_serial: str = ""
    started: datetime | None = None
    terminate: Terminator | None = None
    id: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class LiveRegistry:
    def __init__(self) -> None:
        self._conns: dict[int, LiveConnection] = {}
        self._ids = itertools.count(1)

    def add(self, conn: LiveConnection) -> LiveConnection:
        conn.id = next(self._ids)
        self._conns[conn.id] = conn
        return conn

    def remove(self, conn: LiveConnection) -> None:
        self._conns.pop(conn.id, None)

    def __iter__(self) -> Iterator[LiveConnection]:
        return iter(list(self._conns.values()))

    def __len__(self) -> int:
        return len(self._conns)

    def find(self, predicate: Callable[[LiveConnection], bool]) -> list[LiveConnection]:
        return [c for c in self._conns.values() if predicate(c)]

    async def terminate_matching(
        self, predicate: Callable[[LiveConnection], bool], reason: str
    ) -> list[LiveConnection]:
        """End every matching connection (terminators run concurrently); returns them."""
        matched = self.find(predicate)
        # Concurrently: one slow session (a process that takes time to die) must not delay
        # the others; a lock has to cut every match within a second.
        await asyncio.gather(
            *(c.terminate(reason) for c in matched if c.terminate is not None),
            return_exceptions=True,
        )
        return matched
