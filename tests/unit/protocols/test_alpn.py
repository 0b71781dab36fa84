from bastion.protocols import alpn
from bastion.proxy.router import ROUTES, RouteKind


def test_one_home_for_the_alpn_names() -> None:
    assert alpn.ALPN_SSH == "bastion-ssh/1"
    assert alpn.ALPN_TUNNEL == "bastion-tunnel/1"
    assert alpn.ALPN_HTTP == "http/1.1"
    routed = {name: r.kind for name, r in ROUTES}
    assert routed[alpn.ALPN_SSH] is RouteKind.SSH and routed[alpn.ALPN_TUNNEL] is RouteKind.TUNNEL
