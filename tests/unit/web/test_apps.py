from bastion.web.apps import AUTH_PATH, LAUNCH_PATH, launch_url


def test_launch_url_encodes_the_path():
    url = launch_url("proxy.test:3080", "grafana", "/a?b=c&d")
    assert url == "https://proxy.test:3080/web/apps/grafana/launch?path=%2Fa%3Fb%3Dc%26d"
    assert LAUNCH_PATH.startswith("/web/") and AUTH_PATH == "/x-bastion-auth"
