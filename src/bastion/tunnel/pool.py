"""An agent's reverse tunnels to every proxy: one :class:`TunnelClient` per advertised proxy.

Layer: ``tunnel`` (IO shell). Proxies that run in their own processes advertise their public
address through heartbeats (``proxy`` resources, watched by the agent); the pool keeps one
tunnel to each, so any proxy (behind a load balancer, which picks one for each client) reaches
any node (the all-in-one's own proxy heartbeats too). Until a proxy is advertised (before the
first watch snapshot) the pool holds one tunnel to the configured ``bootstrap`` address, and keeps
it when the bootstrap address is itself advertised; a bootstrap address that is not advertised (a
load balancer in front of the proxies) is dropped, never kept beside the advertised ones: two
tunnels of one agent to the same proxy would replace each other in turn.

Each tunnel reconnects on its own with full-jitter backoff (:mod:`bastion.tunnel.client`), so a
killed proxy costs its tunnels only, and a restarted one is met by agents spread over time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from bastion.tasks import TaskSet
from bastion.tunnel.client import Connector, TunnelClient
from bastion.tunnel.session import StreamHandler

__all__ = ["TunnelPool", "tunnel_keys"]

log = logging.getLogger(__name__)
Addr = tuple[str, int]


def tunnel_keys(advertised: set[Addr], bootstrap: Addr) -> set[Addr | None]:
    """The tunnels to hold (None: the bootstrap tunnel): one per advertised proxy, the bootstrap
    tunnel standing for the advertised address equal to it (no reconnect when the first snapshot
    arrives, and the in-process connector keeps serving the all-in-one's own proxy), and only the
    bootstrap tunnel while nothing is advertised."""
    boot = (bootstrap[0].lower(), bootstrap[1])
    return {
        None if (host.lower(), port) == boot else (host, port) for host, port in advertised
    } or {None}


class TunnelPool:
    """Keeps a tunnel to each proxy address given to :meth:`update`.

    Args:
        bootstrap: the configured proxy address (used while no proxy is advertised).
        ssl_context: the agent's client context (host certificate, host CA, tunnel ALPN).
        on_stream: handler for each stream a proxy opens.
        connector: opens the bootstrap tunnel another way (the in-process node).
        backoff_cap: each tunnel's largest reconnect delay ceiling, seconds.
    """

    def __init__(
        self,
        bootstrap: Addr,
        ssl_context: ssl.SSLContext,
        on_stream: StreamHandler,
        *,
        connector: Connector | None = None,
        backoff_cap: float = 30.0,
    ) -> None:
        self._bootstrap = bootstrap
        self._ctx = ssl_context
        self._on_stream = on_stream
        self._connector = connector
        self._backoff_cap = backoff_cap
        self._clients: dict[Addr | None, TunnelClient] = {}
        """Address -> tunnel; the key None is the bootstrap tunnel."""
        self._tasks: dict[Addr | None, asyncio.Task[None]] = {}
        self._running = TaskSet()
        self._started = False
        self._wanted: set[Addr] = set()
        self._changed = asyncio.Event()

    @property
    def clients(self) -> dict[Addr | None, TunnelClient]:
        """The current tunnels by proxy address (None: the bootstrap tunnel)."""
        return dict(self._clients)

    def update(self, proxies: set[Addr]) -> None:
        """The advertised proxies changed (empty: fall back to the bootstrap address)."""
        if proxies != self._wanted:
            log.info("tunnel pool: proxies %s", sorted(proxies) or "none advertised")
        self._wanted = set(proxies)
        self._changed.set()

    async def run(self) -> None:
        """Keep the tunnels matching the advertised proxies until cancelled."""
        self._started = True
        try:
            while True:
                self._changed.clear()
                await self._reconcile()
                await self._changed.wait()
        finally:
            await self.close()

    async def _reconcile(self) -> None:
        wanted = tunnel_keys(self._wanted, self._bootstrap)
        for key in [k for k in self._clients if k not in wanted]:
            await self._stop(key)
        for key in wanted - set(self._clients):
            self._start(key)

    def set_ssl_context(self, ssl_context: ssl.SSLContext) -> None:
        """A renewed host certificate: every tunnel's next connection uses ``ssl_context``."""
        self._ctx = ssl_context
        for client in self._clients.values():
            client.set_ssl_context(ssl_context)

    def _start(self, key: Addr | None) -> None:
        host, port = key if key is not None else self._bootstrap
        client = TunnelClient(
            host,
            port,
            self._ctx,
            self._on_stream,
            connector=self._connector if key is None else None,
            backoff_cap=self._backoff_cap,
        )
        self._clients[key] = client
        self._tasks[key] = self._running.spawn(client.run(), f"tunnel-{host}:{port}")

    async def _stop(self, key: Addr | None) -> None:
        client = self._clients.pop(key)
        task = self._tasks.pop(key, None)
        await client.close()
        if task is not None and not task.done():
            task.cancel()

    async def close(self) -> None:
        """Close every tunnel (GOAWAY first)."""
        for key in list(self._clients):
            await self._stop(key)
        await self._running.cancel_all(timeout=5)
