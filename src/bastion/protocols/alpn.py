"""The ALPN protocol names Bastion speaks on the shared proxy port, in one place.

Layer: ``protocols`` (pure constants, stdlib only: ``bsh proxy ssh``'s fast path imports this).
The proxy routes by them (:mod:`bastion.proxy.router`); clients and agents offer them.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ALPN_APP", "ALPN_HTTP", "ALPN_MYSQL", "ALPN_POSTGRES", "ALPN_SSH", "ALPN_TUNNEL"]

ALPN_SSH: Final = "bastion-ssh/1"
"""bsh (and ``bsh proxy ssh`` as OpenSSH ProxyCommand): one JSON line, then raw SSH
(:mod:`bastion.protocols.sshroute`)."""
ALPN_TUNNEL: Final = "bastion-tunnel/1"
"""Agents' reverse tunnels (multiplexed, see :mod:`bastion.protocols.muxframe`)."""
ALPN_POSTGRES: Final = "bastion-postgres/1"
"""PostgreSQL wire protocol after TLS (``bsh proxy db``); psql reaches the same route in-band
with an SSLRequest (:mod:`bastion.proxy.db_route`)."""
ALPN_MYSQL: Final = "bastion-mysql/1"
"""MySQL/MariaDB from ``bsh proxy db`` after it greeted the client itself: the client's
HandshakeResponse41, then the MySQL protocol (``DbRoute.handle_mysql`` in
:mod:`bastion.proxy.db_route`)."""
ALPN_APP: Final = "bastion-app/1"
"""A TCP app's bytes after TLS with a certificate routed to the app (``bsh proxy app NAME``,
:meth:`bastion.proxy.app_route.AppRoute.handle_tcp`)."""
ALPN_HTTP: Final = "http/1.1"
"""Web UI and the auth API."""
