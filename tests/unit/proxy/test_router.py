"""Routing table of the shared port (pure)."""

from __future__ import annotations

import pytest

from bastion.protocols.alpn import ALPN_HTTP, ALPN_SSH, ALPN_TUNNEL
from bastion.proxy.router import ROUTES, Route, RouteKind, route


@pytest.mark.parametrize(
    ("offers", "kind"),
    [
        ((), RouteKind.WEB),
        ((ALPN_HTTP,), RouteKind.WEB),
        (("h2", ALPN_HTTP), RouteKind.WEB),
        ((ALPN_SSH,), RouteKind.SSH),
        ((ALPN_TUNNEL,), RouteKind.TUNNEL),
        (("unknown/9", ALPN_SSH), RouteKind.SSH),
        ((ALPN_TUNNEL, ALPN_SSH), RouteKind.TUNNEL),  # client preference decides
        (("unknown/9",), RouteKind.REFUSE),
        (("spdy/3", "x" * 300), RouteKind.REFUSE),
    ],
)
def test_route_by_alpn(offers: tuple[str, ...], kind: RouteKind) -> None:
    assert route(offers, None).kind is kind


def test_route_constants_negotiate_their_alpn() -> None:
    assert Route.SSH.alpn == ALPN_SSH
    assert Route.TUNNEL.alpn == ALPN_TUNNEL
    assert Route.WEB.alpn == ALPN_HTTP


def test_refusal_carries_reason_and_no_alpn() -> None:
    refused = route(("gopher",), "proxy.example.com")
    assert refused.kind is RouteKind.REFUSE
    assert refused.alpn is None
    assert "gopher" in refused.reason
    assert Route.REFUSE("x") == Route(RouteKind.REFUSE, None, "x")


def test_table_has_no_duplicates() -> None:
    ids = [alpn for alpn, _ in ROUTES]
    assert len(ids) == len(set(ids))
