"""The web terminal's harder parts in a real browser (issue 16): Debian's Chromium driven by
Playwright, with the DevTools virtual authenticator as the security key, against the shared
cluster (its WebAuthn relying party switched to ``localhost`` for this module and restored
after: browsers refuse IP addresses as RP ids).

One user whose role requires per-session MFA: the terminal page runs the WebAuthn prompt for
this node and login before the session opens; the WebSocket is dropped under the page and the
terminal reconnects to the same shell (an exported variable is still set); a second tab is a
second shell; a file goes up and comes back down through SFTP (CSRF-less upload refused)."""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import SHOTS, axe_violations, chromium_browser, sign_in, virtual_authenticator
from harness import Cluster, Env, unique
from playwright.sync_api import expect

pytestmark = pytest.mark.integration
LOGIN = getpass.getuser()


@pytest.fixture(scope="module")
def lenv(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The shared cluster with WebAuthn for ``https://localhost:PORT`` (restored afterwards)."""
    tmp = tmp_path_factory.mktemp("webterm")
    env = Env(cluster, tmp)
    original = env.admin_ok("get", "cap/cluster-auth-preference", "--format", "json")
    cap = json.loads(original)
    port = cluster.proxy.rsplit(":", 1)[1]
    cap["spec"]["webauthn"] = {"rp_id": "localhost", "origins": [f"https://localhost:{port}"]}
    cap["metadata"].pop("revision", None)
    (tmp / "cap.json").write_text(json.dumps(cap))
    env.admin_ok("create", "-f", str(tmp / "cap.json"), "--force")
    try:
        yield env
    finally:
        back = json.loads(original)
        back["metadata"].pop("revision", None)
        (tmp / "cap.json").write_text(json.dumps(back))
        env.admin_ok("create", "-f", str(tmp / "cap.json"), "--force")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with chromium_browser(web_assets=True) as browser:
        yield browser


def test_mfa_tabs_reconnect_and_files(lenv: Env, chromium: Any, tmp_path: Path) -> None:
    tag = unique("wt")
    role = f"{tag}-mfa"
    lenv.admin_ok(
        "create",
        "-f",
        "-",
        input=(
            f"kind: role\nmetadata: {{name: {role}}}\nspec:\n"
            "  options: {require_session_mfa: true}\n"
            f"  allow:\n    logins: [{LOGIN}]\n    node_labels: {{'*': '*'}}\n"
        ),
    )
    user = lenv.new_user(f"{role},editor", LOGIN)
    base = f"https://localhost:{lenv.cluster.proxy.rsplit(':', 1)[1]}"
    context = chromium.new_context(
        ignore_https_errors=True, viewport={"width": 1280, "height": 720}
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    virtual_authenticator(context, page)
    sign_in(page, base, user)
    page.goto(f"{base}/web/mfa")
    page.fill("#device-name", "web-key")
    page.click("button[data-ceremony=register]")
    expect(page.locator("#webauthn-status")).to_contain_text("Registered web-key")

    # Every terminal WebSocket goes through a route the test can cut (a network blip).
    sockets: list[Any] = []

    def route(ws: Any) -> None:
        server = ws.connect_to_server()
        sockets.append((ws, server))

    page.route_web_socket("**/web/ssh/ws**", route)

    # 1. Per-session MFA: the key is asked for this node and login, then the shell opens.
    local = socket.gethostname()
    page.goto(f"{base}/web/ssh?node={local}&login={LOGIN}")
    one = page.locator("#terminal")
    expect(one).to_have_attribute("data-state", "open", timeout=15000)
    expect(page.locator("#term-status")).to_contain_text("Connected")
    one.click()
    page.keyboard.type(f"export WEBVAR={tag}-''kept; cd\n")

    # 2. The WebSocket drops under the page: it reconnects to the same shell.
    ws, server = sockets[-1]
    server.close()
    ws.close()
    expect(page.locator("#term-status")).to_contain_text("Reconnected", timeout=15000)
    assert len(sockets) == 2
    one.click()
    page.keyboard.type("echo got:$WEBVAR\n")
    expect(one.locator(".xterm-rows")).to_contain_text(f"got:{tag}-kept", timeout=10000)

    # 3. A second tab is a second shell (its own MFA touch); the first is still there.
    page.click("#new-tab")
    two = page.locator("#terminal-2")
    expect(two).to_have_attribute("data-state", "open", timeout=15000)
    two.click()
    page.keyboard.type("echo tab2:${WEBVAR:-unset}\n")
    expect(two.locator(".xterm-rows")).to_contain_text("tab2:unset", timeout=10000)
    page.screenshot(path=str(SHOTS / "terminal-tabs.png"))
    page.click("#tab-1")
    expect(one).to_be_visible()
    expect(two).to_be_hidden()

    # 4. SFTP through the active tab's session: upload, see it in the shell, download it.
    name = f"{tag}-up.txt"
    local_file = tmp_path / name
    local_file.write_text(f"uploaded {tag}\n")
    page.click("details.files summary")
    page.set_input_files("#upload-file", str(local_file))
    page.click("#upload button[type=submit]")
    expect(page.locator("#files-status")).to_contain_text(f"Uploaded {name}", timeout=10000)
    one.click()
    page.keyboard.type(f"cat ~/{name}; rm -f ~/{name}.down\n")
    expect(one.locator(".xterm-rows")).to_contain_text(f"uploaded {tag}", timeout=10000)
    term_id = page.locator("#upload input[name=term]").input_value()
    down = page.request.get(f"{base}/web/ssh/files?term={term_id}&name={name}")
    assert down.status == 200 and down.body() == f"uploaded {tag}\n".encode()
    assert page.request.get(f"{base}/web/ssh/files?term={term_id}&name=../etc").status == 400
    no_csrf = page.request.post(
        f"{base}/web/ssh/files",
        multipart={
            "term": term_id,
            "file": {"name": "x", "mimeType": "text/plain", "buffer": b"x"},
        },
    )
    assert no_csrf.status == 403
    page.keyboard.type(f"rm -f ~/{name}\n")

    # 5. Join tokens (an admin change: the security key signs exactly this form), connectors.
    page.goto(f"{base}/web/admin/tokens")
    page.fill("#token-roles", "node")
    page.fill("#token-labels", f"team={tag}")
    page.click("form[action='/web/admin/tokens'] button[type=submit]")
    expect(page.locator("#token-secret")).not_to_be_empty()
    row = page.locator("#tokens tbody tr", has_text=f"team={tag}")
    expect(row).to_have_count(1)
    page.on("dialog", lambda d: d.accept())
    # admin.js attaches the security-key step to the forms at DOMContentLoaded; a click before
    # that (a loaded machine) posts without the key and is refused ("nothing was changed")
    page.wait_for_load_state("load")
    row.locator("button", has_text="Remove").click()
    expect(page.locator(".notice.ok")).to_contain_text("removed")
    expect(page.locator("#tokens tbody tr", has_text=f"team={tag}")).to_have_count(0)
    page.goto(f"{base}/web/admin/connectors")
    expect(page.locator("#auth-preference")).to_contain_text("localhost")
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()

    # The audit: the per-session MFA ceremonies (this node and login), the node's SFTP
    # subsystem event, and the admin-MFA touches of the token changes.
    events = lenv.events("--type", "mfa.session,sftp,mfa.admin", "--user", user.name)
    mfa = [e for e in events if e["type"] == "mfa.session" and e["outcome"] == "success"]
    assert len(mfa) >= 2, events  # one per tab
    assert mfa[0]["target"] == local and mfa[0]["fields"]["scope"] == f"session:{local}:{LOGIN}"
    assert any(e["type"] == "sftp" for e in events), "the node audits the SFTP subsystem"
    admin = [e for e in events if e["type"] == "mfa.admin" and e["outcome"] == "success"]
    assert len(admin) >= 2, events


PAGES = (
    "/web/",
    "/web/nodes",
    "/web/ssh?node={node}&login={login}",
    "/web/recordings",
    "/web/admin/users",
    "/web/admin/roles",
    "/web/admin/audit",
    "/web/admin/tokens",
    "/web/account",
)
"""The main pages (the others share their layout and components)."""


def test_accessibility_and_screenshots(lenv: Env, chromium: Any) -> None:
    """axe-core on the main pages (no serious or critical violations) and a screenshot of
    each (test artifacts). The context bypasses the CSP only to inject axe."""
    user = lenv.new_user("editor,access", LOGIN)
    base = f"https://localhost:{lenv.cluster.proxy.rsplit(':', 1)[1]}"
    context = chromium.new_context(
        ignore_https_errors=True, viewport={"width": 1280, "height": 720}, bypass_csp=True
    )
    page = context.new_page()
    page.goto(f"{base}/web/login")
    found = {"/web/login": axe_violations(page)}
    page.screenshot(path=str(SHOTS / "login.png"))
    sign_in(page, base, user)
    for path in PAGES:
        url = path.format(node=socket.gethostname(), login=LOGIN)
        page.goto(f"{base}{url}")
        if "/web/ssh" in url:
            expect(page.locator("#terminal")).to_have_attribute("data-state", "open", timeout=15000)
        found[path] = axe_violations(page)
        shot = path.strip("/").split("?")[0].replace("/", "-") or "home"
        page.screenshot(path=str(SHOTS / f"{shot}.png"))
    assert not {k: v for k, v in found.items() if v}, found
    context.close()


def test_account_page_keys_and_password(lenv: Env, chromium: Any) -> None:
    """The account page: add a security key through the registration ceremony and see it
    listed by kind and name; change the password with a wrong current one (the error inline),
    then the right one (the key confirms both); remove the key (touched again)."""
    user = lenv.new_user("access", LOGIN)
    base = f"https://localhost:{lenv.cluster.proxy.rsplit(':', 1)[1]}"
    context = chromium.new_context(
        ignore_https_errors=True, viewport={"width": 1280, "height": 720}
    )
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and "status of 401" not in m.text  # the refused attempt's page
            else None
        ),
    )
    page.on("dialog", lambda d: d.accept())
    virtual_authenticator(context, page)
    sign_in(page, base, user)
    page.click("a[href='/web/account']")  # the home page's link
    devices = page.locator("#devices")
    expect(devices).to_contain_text("authenticator app")
    page.fill("#device-name", "acct-key")
    page.click("button[data-ceremony=register]")
    expect(page.locator("#devices tr[data-device='acct-key']")).to_contain_text("security key")

    new = user.password + " changed"
    form = page.locator("#password-form")
    for current in ("not the password", user.password):
        page.fill("#pw-current", current)
        page.fill("#pw-new", new)
        page.fill("#pw-confirm", new)
        page.click("#password-form button[type=submit]")
        if current != user.password:
            expect(form.locator("[role=alert]")).to_contain_text("current password is wrong")
    expect(page.locator("#password-form [role=status]")).to_contain_text("Password changed")
    # The status is in the new page's HTML before its scripts attached their submit handlers
    # (a click then posted the form without the key's proof): wait for the page to be loaded.
    page.wait_for_load_state("load")

    page.click("#devices tr[data-device='acct-key'] button[type=submit]")
    expect(page.locator("p.notice.ok").first).to_contain_text("Removed acct-key")
    expect(page.locator("#devices tr[data-device='acct-key']")).to_have_count(0)

    # The resources page's other kinds: Servers | Databases | Apps.
    page.goto(f"{base}/web/nodes")
    page.click("nav.tabs a[href='/web/databases']")
    expect(page.locator("nav.tabs a[aria-current=page]")).to_have_text("Databases")
    expect(page.locator("#databases, p.empty")).to_have_count(1)
    page.click("nav.tabs a[href='/web/apps']")
    expect(page.locator("nav.tabs a[aria-current=page]")).to_have_text("Apps")
    assert not errors, errors
    context.close()


def test_join_a_web_terminal_as_observer(lenv: Env, chromium: Any) -> None:
    """Issue 17's join page: A's web terminal is listed on B's sessions page with a
    "Join as observer" action (B's role may join A's role's sessions); the join page shows
    what A's shell prints from then on."""
    tag = unique("wj")
    lenv.admin_ok(
        "create",
        "-f",
        "-",
        input=(
            f"kind: role\nmetadata: {{name: {tag}-own}}\nspec:\n"
            f"  allow:\n    logins: [{LOGIN}]\n    node_labels: {{'*': '*'}}\n---\n"
            f"kind: role\nmetadata: {{name: {tag}-watch}}\nspec:\n"
            f"  allow:\n    join_sessions: [{{roles: [{tag}-own], modes: [observer]}}]\n"
        ),
    )
    owner, watcher = lenv.new_user(f"{tag}-own", LOGIN), lenv.new_user(f"{tag}-watch")
    base = f"https://localhost:{lenv.cluster.proxy.rsplit(':', 1)[1]}"
    contexts = [
        chromium.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 720})
        for _ in range(2)
    ]
    a, b = (c.new_page() for c in contexts)
    errors: list[str] = []
    b.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(a, base, owner)
    a.goto(f"{base}/web/ssh?node={socket.gethostname()}&login={LOGIN}")
    term = a.locator("#terminal")
    expect(term).to_have_attribute("data-state", "open", timeout=15000)

    sign_in(b, base, watcher)
    b.goto(f"{base}/web/sessions")
    row = b.locator("#sessions tbody tr", has_text=owner.name)
    expect(row).to_have_count(1, timeout=10000)
    expect(row.locator("a", has_text="Join as")).to_have_count(1)  # observer only
    row.locator("a", has_text="Join as observer").click()
    pane = b.locator("#join-terminal")
    expect(pane).to_have_attribute("data-state", "open", timeout=10000)
    expect(b.locator("#join-terminate")).to_have_count(0)

    term.click()
    a.keyboard.type("echo seen:$((6*7))\n")
    expect(pane.locator(".xterm-rows")).to_contain_text("seen:42", timeout=10000)
    b.screenshot(path=str(SHOTS / "session-join.png"))
    assert not [e for e in errors if "Content Security Policy" in e], errors
    for c in contexts:
        c.close()
