"""Reverse tunnels: agents dial the proxy once and the proxy opens streams through it.

``session.py`` runs the pure :mod:`bastion.protocols.muxframe` over a TLS transport and exposes
each stream as an asyncio Transport; ``server.py`` is the proxy's registry of agents and ``dial``;
``client.py`` is the agent's dialler with reconnect, backoff and jitter.
"""

from bastion.tunnel.client import TunnelClient, client_tls_context
from bastion.tunnel.server import AgentTunnel, TunnelServer
from bastion.tunnel.session import MuxSession, MuxStream, StreamHandler

__all__ = [
    "AgentTunnel",
    "MuxSession",
    "MuxStream",
    "StreamHandler",
    "TunnelClient",
    "TunnelServer",
    "client_tls_context",
]
