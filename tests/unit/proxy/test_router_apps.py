from bastion.proxy.router import RouteKind, route


def test_app_sni_routes_to_app():
    got = route(("h2", "http/1.1"), "grafana.proxy.test", "proxy.test")
    assert got.kind is RouteKind.APP and got.target == "grafana"
    assert route((), "grafana.proxy.test", "proxy.test").kind is RouteKind.APP


def test_other_names_and_protocols_keep_their_routes():
    assert route(("http/1.1",), "proxy.test", "proxy.test").kind is RouteKind.WEB
    assert route(("http/1.1",), "grafana.proxy.test", "").kind is RouteKind.WEB
    assert route(("bastion-ssh/1",), "grafana.proxy.test", "proxy.test").kind is RouteKind.SSH
