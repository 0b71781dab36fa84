"""The web terminal's pure checks: the WebSocket's Origin, the terminal size, which proxy the
server dials, and the CSP nonce for xterm.js's style elements."""

from __future__ import annotations

import pytest

from bastion.errors import AccessDenied, BadParameter
from bastion.web.security import content_security_policy
from bastion.web.terminal import VENDOR, check_origin, parse_size, proxy_candidates


def test_only_this_sites_pages_may_open_the_websocket() -> None:
    check_origin("https://proxy.example:3080", "proxy.example:3080")
    for origin in (None, "", "null", "https://evil.example", "http://proxy.example:3080"):
        with pytest.raises(AccessDenied, match="this site's own pages"):
            check_origin(origin, "proxy.example:3080")


def test_terminal_size_is_bounded_and_defaults_to_80x24() -> None:
    assert parse_size("", "") == (80, 24)
    assert parse_size("132", "43") == (132, 43)
    assert parse_size("1", "100000") == (10, 500)
    with pytest.raises(BadParameter, match="numbers"):
        parse_size("wide", "24")


def test_the_host_header_alone_never_chooses_what_the_server_dials() -> None:
    known = ["p1:3080", "p2:3080"]
    assert proxy_candidates("p2:3080", known) == ["p2:3080", "p1:3080"]
    assert proxy_candidates("attacker:22", known) == known
    assert proxy_candidates("x", []) == []


def test_style_nonce_allows_styles_not_scripts() -> None:
    csp = content_security_policy(style_nonce="abc")
    assert "style-src 'self' 'nonce-abc'" in csp and "script-src 'self';" in csp
    assert "unsafe-inline" not in csp and "nonce" not in content_security_policy()


def test_vendor_files_are_a_fixed_list_of_npm_paths() -> None:
    assert set(VENDOR) == {"xterm.js", "xterm.css", "addon-fit.js"}
    assert all(path.startswith("@xterm/") and ".." not in path for path in VENDOR.values())
