"""The web UI in a real browser (issue 16): Debian's Chromium driven by Playwright against the
shared cluster. Sign in, the resources page filtered by RBAC (a node the user may not reach is
absent), a terminal to the cluster's own node running ``echo hello``, and a lock closing it
with the lock's message. Plus the HTTP refusals: a WebSocket from another origin or without a
session."""

from __future__ import annotations

import base64
import getpass
import os
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from browser import chromium_browser, sign_in
from harness import Cluster, Env, User, unique
from playwright.sync_api import expect

pytestmark = pytest.mark.integration
LOGIN = getpass.getuser()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with chromium_browser(web_assets=True) as browser:
        yield browser


def _user_and_nodes(env: Env, tag: str) -> User:
    """Three agentless nodes labelled ``team=<tag>`` (one the user may not reach, one with a
    label that looks like markup) and a user whose role reaches every node but
    ``webhide=<tag>``: one ``bctl create`` for all of them."""
    role = unique("webui")
    docs: list[dict[str, Any]] = [
        {
            "kind": "role",
            "version": "v1",
            "metadata": {"name": role},
            "spec": {
                "allow": {"logins": [LOGIN], "node_labels": {"*": "*"}},
                "deny": {"node_labels": {"webhide": tag}},
            },
        }
    ]
    for name, labels in (
        (f"{tag}-web", {"team": tag, "env": "prod"}),
        (f"{tag}-secret", {"team": tag, "webhide": tag}),
        (f"{tag}-evil", {"team": tag, "x": "<img src=x onerror=alert(1)>"}),
    ):
        docs.append(
            {
                "kind": "node",
                "metadata": {"name": name, "labels": labels},
                "spec": {"hostname": name, "addr": "127.0.0.1:1", "agentless": True},
            }
        )
    env.admin_ok("create", "-f", "-", input=yaml.safe_dump_all(docs))
    return env.new_user(role, LOGIN)


def test_resources_terminal_and_lock_in_chromium(env: Env, chromium: Any) -> None:
    tag = unique("t")
    visible, hidden = f"{tag}-web", f"{tag}-secret"
    user = _user_and_nodes(env, tag)
    local = socket.gethostname()  # the all-in-one's own node (ssh_service.node_name default)
    base = f"https://{env.cluster.proxy}"
    context = chromium.new_context(
        ignore_https_errors=True, viewport={"width": 1280, "height": 720}
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, base, user)

    # Resources: RBAC-filtered (the hidden node is absent), searched, filtered by label.
    page.goto(f"{base}/web/nodes?q={tag}")
    table = page.locator("table.nodes")
    expect(table).to_contain_text(visible)
    assert hidden not in table.inner_text()
    assert page.locator("img").count() == 0  # a label is text, never markup
    expect(table).to_contain_text("<img src=x onerror=alert(1)>")
    page.click("a.chip:has-text('env=prod')")
    expect(page.locator("#label-filter")).to_have_value("env=prod")
    rows = page.locator("table.nodes tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(visible)
    api = page.request.get(f"{base}/web/api/nodes?q={tag}&sort=-name")
    assert api.status == 200
    assert [n["name"] for n in api.json()["items"]] == [visible, f"{tag}-evil"]

    # The WebSocket: only with the session, only from this origin.
    cookie = next(c for c in context.cookies() if c["name"] == "bastion_session")
    session = {"Cookie": f"bastion_session={cookie['value']}"}
    assert _ws_handshake(env.cluster, {**session, "Origin": "https://evil.example"}) == 403
    assert _ws_handshake(env.cluster, {"Origin": base}) == 401

    # The terminal: the connect action opens it in a new tab.
    page.goto(f"{base}/web/nodes?q={local}")
    row = page.locator("table.nodes tbody tr", has=page.locator(f"th:text-is('{local}')"))
    expect(row.locator("select[name=login]")).to_have_value(LOGIN)
    with context.expect_page() as opened:
        row.locator("button", has_text="Connect").click()
    term = opened.value
    term.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    expect(term.locator("#term-status")).to_contain_text("Connected", timeout=15000)
    term.locator("#terminal").click()
    term.keyboard.type("echo hel''lo\n")
    expect(term.locator(".xterm-rows")).to_contain_text("hello", timeout=10000)

    # A lock on the user closes it with the lock's message.
    message = f"web lock {tag}"
    env.admin_ok("lock", f"--user={user.name}", f"--message={message}", "--ttl=2m")
    expect(term.locator("#term-status")).to_contain_text(message, timeout=5000)
    expect(term.locator("#terminal")).to_have_attribute("data-state", "closed")
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()


def _ws_handshake(cluster: Cluster, headers: dict[str, str]) -> int:
    """The HTTP status of a WebSocket upgrade to /web/ssh/ws."""
    host, port = cluster.proxy.rsplit(":", 1)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as sock:
            lines = [
                "GET /web/ssh/ws?node=x&login=y HTTP/1.1",
                f"Host: {cluster.proxy}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Version: 13",
                f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
                *(f"{k}: {v}" for k, v in headers.items()),
            ]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])
