import pytest

from bastion.protocols.apphost import (
    app_address,
    app_label,
    normalize_path,
    render_headers,
    safe_redirect,
)
from bastion.types.apps import AppHeader

D = "proxy.test"


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("grafana.proxy.test", "grafana"),
        ("Grafana.Proxy.Test:3080", "grafana"),
        ("a.b.proxy.test", None),
        ("proxy.test", None),
        ("grafana.proxy.test.evil", None),
        ("grafana.evilproxy.test", None),
        ("gra_fana.proxy.test", None),
        (None, None),
    ],
)
def test_app_label(host, want):
    assert app_label(host, D) == want


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("/", "/"),
        ("/a/./b/../c", "/a/c"),
        ("/%2e%2e/%2E%2e/etc/passwd", "/etc/passwd"),
        ("/a/..", "/"),
        ("/a//b", "/a//b"),
        ("/a%2fb", None),
        ("/a\\b", None),
        ("relative", None),
        ("/a%00", None),
    ],
)
def test_normalize_path(raw, want):
    assert normalize_path(raw) == want


@pytest.mark.parametrize(
    "evil",
    [
        "//evil.example",
        "https:evil.example",
        "/%2F%2Fevil.example",
        "/%252F%252Fevil",
        "/\\evil",
        "https://evil.example/",
        "https://grafana.proxy.test.evil.example/",
        "https://user@grafana.proxy.test/",
        "https://grafana.proxy.test:444/",
        "http://grafana.proxy.test/",
        "javascript:alert(1)",
        "/web/../../evil",
        "/other",
        " https://grafana.proxy.test/",
    ],
)
def test_safe_redirect_refuses(evil):
    assert safe_redirect(evil, D, 3080) is None


@pytest.mark.parametrize(
    "good", ["/web/", "/web/apps/grafana/launch?path=%2Fx", "https://grafana.proxy.test:3080/x?y=1"]
)
def test_safe_redirect_accepts(good):
    assert safe_redirect(good, D, 3080) == good


def test_app_address():
    assert app_address("grafana", "", "proxy.test:3080") == "grafana.proxy.test:3080"
    assert app_address("grafana", "", "proxy.test:443") == "grafana.proxy.test"
    assert app_address("grafana", "g.example.com", "proxy.test") == "g.example.com"
    # Reached by IP address or localhost: the apps live under apps.localhost (app_domain).
    assert app_address("grafana", "", "127.0.0.1:3080") == "grafana.apps.localhost:3080"
    assert app_address("grafana", "", "[::1]:3080") == "grafana.apps.localhost:3080"
    assert app_address("grafana", "", "localhost") == "grafana.apps.localhost"


def test_rewrite_headers_expand_trait_templates():
    headers = [
        AppHeader(name="X-Forwarded-User", value="{{internal.logins}}"),
        AppHeader(name="X-Team", value="team-{{external.team}}"),
        AppHeader(name="X-Mail", value="{{email.local(external.email)}}"),
        AppHeader(name="X-Missing", value="{{external.nothing}}"),
        AppHeader(name="X-Static", value="grafana"),
    ]
    traits = {"logins": ("alice", "root"), "team": ("dev",), "email": ("alice@example.com",)}
    assert render_headers(headers, traits) == (
        b"X-Forwarded-User: alice,root\r\n"  # several values: joined with a comma
        b"X-Team: team-dev\r\n"
        b"X-Mail: alice\r\n"
        b"X-Static: grafana\r\n"  # X-Missing: its trait is missing, the header is left out
    )
    # the certificate's logins when the traits carry none
    assert render_headers(headers[:1], {}, ("bob",)) == b"X-Forwarded-User: bob\r\n"


def test_a_trait_cannot_inject_a_header():
    headers = [AppHeader(name="X-Team", value="{{external.team}}")]
    assert render_headers(headers, {"team": ("dev\r\nBastion-Jwt-Assertion: forged",)}) == b""
    assert render_headers(headers, {"team": ("équipe",)}) == "X-Team: équipe\r\n".encode()
