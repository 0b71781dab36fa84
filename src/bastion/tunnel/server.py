"""Proxy side of the reverse tunnels: the registry of connected agents and ``dial``.

Layer: ``tunnel`` (IO shell). The listener has already terminated TLS with ALPN
``bastion-tunnel/1`` and verified the agent's host certificate against the host TLS CA; this
module receives that transport and the verified :class:`~bastion.types.identity.Identity`, runs
a :class:`~bastion.tunnel.session.MuxSession` over it and keys it by the certificate's host id
(the stable attribute, ARCHITECTURE.md 6.7) and, as an alias, by the ``hostname`` trait.

A reconnecting agent replaces its older tunnel (which is drained: GOAWAY, then closed when its
streams end), so a half-dead TCP connection never shadows a fresh one. Every tunnel is registered
in the LiveRegistry (kind ``tunnel``) so that a lock on the node can cut it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bastion.api.ratelimit import RateLimiter
from bastion.clock import Clock
from bastion.errors import AccessDenied, ConnectionProblem, LimitExceeded, LocalProtocolError
from bastion.live.registry import LiveConnection, LiveRegistry
from bastion.tunnel.session import MuxSession, MuxStream
from bastion.types.identity import Identity

__all__ = ["AgentTunnel", "TunnelServer"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AgentTunnel:
    """One connected agent."""

    host_id: str
    name: str
    identity: Identity
    session: MuxSession
    live: LiveConnection


class TunnelServer:
    """Accepts agent tunnels and dials streams through them.

    Args:
        registry: where every tunnel is registered (kind ``tunnel``) with a terminator.
        clock: for the registry's start times.
        keepalive_interval: seconds between PINGs on each tunnel.
        keepalive_timeout: silence after which a tunnel is considered dead.
        admission: new tunnels accepted per second across all agents (a token bucket): after a
            proxy restart or a partition heals, agents reconnect with full-jitter backoff, and
            the ones over the rate are refused at once and retry later, so the proxy never
            takes a thundering herd of handshakes and replays.
    """

    def __init__(
        self,
        registry: LiveRegistry,
        clock: Clock,
        *,
        keepalive_interval: float = 5.0,
        keepalive_timeout: float = 15.0,
        admission: RateLimiter | None = None,
    ) -> None:
        self._registry = registry
        self._admission = admission
        self._clock = clock
        self._interval = keepalive_interval
        self._timeout = keepalive_timeout
        self._by_host: dict[str, AgentTunnel] = {}
        self._by_name: dict[str, str] = {}  # node name -> host id

    def accept(
        self, transport: asyncio.Transport, identity: Identity, early: bytes = b""
    ) -> AgentTunnel:
        """Run a tunnel over an authenticated agent connection.

        Args:
            transport: the TLS transport (its protocol is replaced by the tunnel's).
            identity: the verified host identity of the agent.
            early: bytes already read from the transport after the handshake.

        Returns:
            The registered tunnel; await ``tunnel.session.wait_closed()`` for its end.

        Raises:
            AccessDenied: the identity is not a host identity or has no host id.
        """
        if identity.kind != "host" or not identity.host_id:
            raise AccessDenied(f"a {identity.kind} identity may not open a reverse tunnel")
        if self._admission is not None and not self._admission.allow(
            "tunnels", self._clock.monotonic()
        ):
            raise LimitExceeded("too many agents connecting at once; retry with backoff")
        host_id = identity.host_id
        names = identity.traits.get("hostname", ())
        name = names[0] if names else ""
        session = MuxSession(
            "server",
            keepalive_interval=self._interval,
            keepalive_timeout=self._timeout,
            name=f"{name or host_id}",
        )
        peer = transport.get_extra_info("peername")
        live = LiveConnection(
            kind="tunnel",
            identity=identity,
            target=host_id,
            remote_addr=_addr_text(peer),
            started=self._clock.now(),
            extra={"node": name},
        )

        async def terminate(reason: str) -> None:
            session.abort(reason)

        live.terminate = terminate
        tunnel = AgentTunnel(host_id, name, identity, session, live)
        old = self._by_host.get(host_id)
        if old is not None:
            log.info("tunnel: agent %s reconnected, draining its older tunnel", host_id)
            self._forget(old)
            old.session.drain("replaced by a newer tunnel of the same agent")
        self._by_host[host_id] = tunnel
        if name:
            owner = self._by_name.get(name)
            if owner is None or owner == host_id or owner not in self._by_host:
                self._by_name[name] = host_id
            else:
                # A node may not take another live node's name (it would receive its sessions).
                log.warning("tunnel: host %s claims name %r held by host %s", host_id, name, owner)
        self._registry.add(live)
        transport.set_protocol(session)
        session.connection_made(transport)
        session.closed_callback = lambda: self._on_closed(tunnel)
        if early:
            session.data_received(early)
        log.info("tunnel: agent %s (%s) connected from %s", host_id, name, live.remote_addr)
        return tunnel

    def _on_closed(self, tunnel: AgentTunnel) -> None:
        self._forget(tunnel)
        log.info("tunnel: agent %s disconnected: %s", tunnel.host_id, tunnel.session.close_reason)

    def _forget(self, tunnel: AgentTunnel) -> None:
        self._registry.remove(tunnel.live)
        if self._by_host.get(tunnel.host_id) is tunnel:
            del self._by_host[tunnel.host_id]
            if tunnel.name and self._by_name.get(tunnel.name) == tunnel.host_id:
                del self._by_name[tunnel.name]

    def lookup(self, target: str) -> AgentTunnel | None:
        """The live tunnel of a host id (or, failing that, of a node name)."""
        tunnel = self._by_host.get(target)
        if tunnel is None and target in self._by_name:
            tunnel = self._by_host.get(self._by_name[target])
        if tunnel is not None and tunnel.session.is_closed:
            return None
        return tunnel

    def is_online(self, target: str) -> bool:
        return self.lookup(target) is not None

    @property
    def tunnels(self) -> list[AgentTunnel]:
        return list(self._by_host.values())

    async def dial(
        self,
        host_id: str,
        header: dict[str, Any],
        protocol_factory: Callable[[], asyncio.BaseProtocol],
    ) -> MuxStream:
        """Open a stream to the agent ``host_id`` and attach ``protocol_factory()`` to it.

        Raises:
            ConnectionProblem: no live tunnel for ``host_id``, or it is closing.
        """
        tunnel = self.lookup(host_id)
        if tunnel is None:
            raise ConnectionProblem(
                f"node {host_id} is offline (no reverse tunnel from its agent); "
                "check that its agent runs and can reach the proxy"
            )
        try:
            stream = tunnel.session.open_stream(header)
        except (ConnectionResetError, LocalProtocolError) as exc:
            raise ConnectionProblem(f"node {host_id} is offline: tunnel closing ({exc})") from exc
        stream.attach(protocol_factory())
        return stream

    async def close(self, reason: str = "proxy shutting down") -> None:
        """Close every tunnel (GOAWAY first) and wait up to 5 s for them to go."""
        tunnels = list(self._by_host.values())
        for tunnel in tunnels:
            tunnel.session.close(reason)
        try:
            async with asyncio.timeout(5):
                for tunnel in tunnels:
                    await tunnel.session.wait_closed()
        except TimeoutError:
            for tunnel in tunnels:
                tunnel.session.abort(reason)


def _addr_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return ""
