"""Route a TLS connection on the shared proxy port by the ALPN protocols its ClientHello offers.

Layer: ``proxy`` (pure). Called by ``proxy/listener.py`` *before* the TLS handshake (from
:func:`bastion.protocols.clienthello.parse_client_hello`) so that the listener can pick the server
``SSLContext`` of the route: mTLS with the user CA for ``bastion-ssh/1``, mTLS with the host CA for
``bastion-tunnel/1``, optional client certificates for the web. stdlib ``ssl`` offers no
per-connection ALPN callback (STYLE.md design constraint 3), hence this decision up front.

Rules:

* No ALPN at all: the web (browsers and curl always offer ``http/1.1``; plain TLS clients too).
* Otherwise the first offered protocol (client preference order) that :data:`ROUTES` knows wins.
* Only unknown protocols offered: refuse (never guess; an unknown client must not reach the web
  context by accident and we must not speak a protocol it did not ask for).

:data:`ROUTES` is the one table to extend when database (``postgresql``, ``bastion-mysql/1``) and
app routes arrive.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Final

from bastion.protocols.alpn import (
    ALPN_APP,
    ALPN_HTTP,
    ALPN_MYSQL,
    ALPN_POSTGRES,
    ALPN_SSH,
    ALPN_TUNNEL,
)
from bastion.protocols.apphost import app_label

__all__ = ["ROUTES", "Route", "RouteKind", "route"]


class RouteKind(enum.Enum):
    SSH = "ssh"
    TUNNEL = "tunnel"
    WEB = "web"
    DB = "db"
    DB_MYSQL = "db_mysql"
    APP = "app"
    APP_TCP = "app_tcp"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a connection goes, and the ALPN protocol the server context negotiates for it."""

    kind: RouteKind
    alpn: str | None
    """The protocol to negotiate; ``None`` for REFUSE."""
    reason: str = ""
    """Why (for logs and the audit of refusals)."""
    target: str = ""
    """The app's name (from the SNI) for ``APP``."""

    SSH: ClassVar[Route]
    TUNNEL: ClassVar[Route]
    WEB: ClassVar[Route]
    DB: ClassVar[Route]
    DB_MYSQL: ClassVar[Route]
    APP: ClassVar[Route]
    APP_TCP: ClassVar[Route]

    @staticmethod
    def REFUSE(reason: str) -> Route:  # noqa: N802 -- reads like the other Route constants
        """A refusal with its reason."""
        return Route(RouteKind.REFUSE, None, reason)


Route.SSH = Route(RouteKind.SSH, ALPN_SSH)
Route.TUNNEL = Route(RouteKind.TUNNEL, ALPN_TUNNEL)
Route.WEB = Route(RouteKind.WEB, ALPN_HTTP)
Route.DB = Route(RouteKind.DB, ALPN_POSTGRES)
Route.DB_MYSQL = Route(RouteKind.DB_MYSQL, ALPN_MYSQL)
Route.APP = Route(RouteKind.APP, ALPN_HTTP)
Route.APP_TCP = Route(RouteKind.APP_TCP, ALPN_APP)

ROUTES: Final[tuple[tuple[str, Route], ...]] = (
    (ALPN_SSH, Route.SSH),
    (ALPN_TUNNEL, Route.TUNNEL),
    (ALPN_POSTGRES, Route.DB),
    (ALPN_MYSQL, Route.DB_MYSQL),
    (ALPN_APP, Route.APP_TCP),
    (ALPN_HTTP, Route.WEB),
    # h2-capable clients also offer http/1.1 in practice; the web context negotiates http/1.1.
    ("h2", Route.WEB),
)
"""Offered ALPN id -> route. Add database and app protocols here."""

_BY_ALPN: Final = dict(ROUTES)


def route(alpn_offers: tuple[str, ...], sni: str | None, app_domain: str = "") -> Route:
    """Choose the route for a ClientHello.

    Args:
        alpn_offers: offered ALPN ids in client preference order (empty: no ALPN extension).
        sni: the requested server name.
        app_domain: the proxy's public host name when the app route is on: an SNI of
            ``NAME.<app_domain>`` offering HTTP (or no ALPN) goes to the app route.

    Returns:
        The route; ``RouteKind.REFUSE`` with a reason when only unknown protocols are offered.
    """
    web_offers = not alpn_offers or any(o in (ALPN_HTTP, "h2") for o in alpn_offers)
    label = app_label(sni, app_domain) if app_domain and web_offers else None
    if label is not None:
        return Route(RouteKind.APP, ALPN_HTTP, target=label)
    if not alpn_offers:
        return Route.WEB
    for offer in alpn_offers:
        chosen = _BY_ALPN.get(offer)
        if chosen is not None:
            return chosen
    shown = ", ".join(repr(a[:40]) for a in alpn_offers[:5])
    return Route.REFUSE(f"no supported ALPN protocol offered ({shown})")
