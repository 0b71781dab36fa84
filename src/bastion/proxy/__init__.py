"""The proxy: one public TLS port that detects, authenticates, authorizes and routes.

Layering (STYLE.md "How a connection should flow")::

    listener.py  (IO)    accept, peek, PROXY header, HTTP redirect, TLS by ALPN, verify peer
      router.py  (pure)  ALPN offers -> Route           limits.py (pure) unauthenticated caps
      ssh_route.py (IO)  bastion-ssh/1: request line -> RBAC -> tunnel.dial | TCP -> relay.py
      relay.py   (IO)    protocol-level pump between two transports (flow control, half-close)

Reverse tunnels from agents are served by :mod:`bastion.tunnel`.
"""

from bastion.protocols.alpn import ALPN_HTTP, ALPN_SSH, ALPN_TUNNEL
from bastion.proxy.limits import UnauthenticatedLimiter
from bastion.proxy.listener import ListenerConfig, ListenerDeps, ProxyListener, ProxyTLS
from bastion.proxy.relay import Relay, RelaySide
from bastion.proxy.router import Route, RouteKind, route
from bastion.proxy.ssh_route import NodeDirectory, RoleSource, SSHRoute, SSHRouteDeps

__all__ = [
    "ALPN_HTTP",
    "ALPN_SSH",
    "ALPN_TUNNEL",
    "ListenerConfig",
    "ListenerDeps",
    "NodeDirectory",
    "ProxyListener",
    "ProxyTLS",
    "Relay",
    "RelaySide",
    "RoleSource",
    "Route",
    "RouteKind",
    "SSHRoute",
    "SSHRouteDeps",
    "UnauthenticatedLimiter",
    "route",
]
