"""The web UI's administration, recordings and sessions pages in a real browser (issue 16):
Debian's Chromium driven by Playwright against the shared cluster. An admin creates a user and
sees the invite link, creates and lifts a lock, views a role and gets the server's validation
error for a bad edit, records a session through the web terminal and plays it back, and checks
an audit event's inclusion proof. A user without rights gets 403 on the admin URLs; a POST
without the CSRF token is refused."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from browser import chromium_browser, sign_in
from harness import Env, unique
from playwright.sync_api import expect

pytestmark = pytest.mark.integration
LOGIN = getpass.getuser()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with chromium_browser(web_assets=True) as browser:
        yield browser


def test_admin_pages_and_player_in_chromium(env: Env, chromium: Any) -> None:
    tag = unique("a")
    admin = env.new_user("editor,access", LOGIN)
    plain = env.new_user("access", LOGIN)
    role = f"{tag}-role"
    env.admin_ok(
        "create",
        "-f",
        "-",
        input=f"kind: role\nversion: v1\nmetadata: {{name: {role}}}\n"
        "spec: {allow: {logins: [nobody]}}\n",
    )
    base = f"https://{env.cluster.proxy}"
    context = chromium.new_context(
        ignore_https_errors=True, viewport={"width": 1280, "height": 720}
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: d.accept())
    sign_in(page, base, admin)

    # Users: create one, see the invite link (its name is text, not markup).
    newcomer = f"{tag}-new"
    page.goto(f"{base}/web/admin/users")
    page.fill("#new-user", newcomer)
    page.fill("#new-roles", "access")
    page.fill("#new-logins", LOGIN)
    page.click("form[action='/web/admin/users'] button[type=submit]")
    expect(page.locator("#invite-url")).to_contain_text("/web/invite/")
    expect(page.locator("#users")).to_contain_text(newcomer)
    assert page.request.get(page.locator("#invite-url").inner_text()).status == 200

    # Locks: create one with a message and a TTL, then lift it.
    message = f"maintenance {tag}"
    page.goto(f"{base}/web/admin/locks")
    page.select_option("#lock-kind", "user")
    page.fill("#lock-target", newcomer)
    page.fill("#lock-message", message)
    page.fill("#lock-ttl", "1h")
    page.click("form[action='/web/admin/locks'] button[type=submit]")
    row = page.locator("#locks tbody tr", has_text=message)
    expect(row).to_have_count(1)
    expect(row).to_contain_text(f"user={newcomer}")
    row.locator("button", has_text="Lift").click()
    expect(page.locator(".notice.ok")).to_contain_text("lifted")
    expect(page.locator("#locks tbody tr", has_text=message)).to_have_count(0)

    # Roles: the YAML, and a bad edit shows the server's validation error with the text kept.
    page.goto(f"{base}/web/admin/roles/{role}")
    expect(page.locator("#role-stored")).to_contain_text("nobody")
    text = page.locator("#role-yaml").input_value()
    bad = text.replace("max_session_ttl: 12h", "max_session_ttl: soon")
    assert bad != text
    page.fill("#role-yaml", bad)
    page.click("form.editor button[type=submit]")
    expect(page.locator("#role-error")).to_contain_text("max_session_ttl")
    expect(page.locator("#role-yaml")).to_have_value(bad)
    good = text.replace("nobody", "somebody")
    page.fill("#role-yaml", good)
    page.click("form.editor button[type=submit]")
    expect(page.locator(".notice.ok")).to_contain_text("updated")
    expect(page.locator("#role-stored")).to_contain_text("somebody")

    # A session through the web terminal, then its recording in the player.
    local = socket.gethostname()
    term = context.new_page()
    term.goto(f"{base}/web/ssh?node={local}&login={LOGIN}")
    expect(term.locator("#term-status")).to_contain_text("Connected", timeout=15000)
    term.locator("#terminal").click()
    term.keyboard.type(f"echo rec-{tag}-''done; sleep 1; exit\n")
    expect(term.locator("#terminal")).to_have_attribute("data-state", "closed", timeout=15000)
    term.close()
    page.goto(f"{base}/web/recordings")
    play = page.locator("#recordings tbody tr", has_text=admin.name).first.locator("a")
    for _ in range(50):  # the node uploads the recording once the session has ended
        if play.count():
            break
        page.wait_for_timeout(200)
        page.reload()
    play.click()
    player = page.locator("#player")
    expect(player).to_have_attribute("data-state", "ready", timeout=10000)
    expect(page.locator("aside.session-events")).to_contain_text("session.start")
    page.select_option("#speed", "16")
    page.click("#play")
    expect(player).to_have_attribute("data-state", "ended", timeout=15000)
    expect(page.locator("#player .xterm-rows")).to_contain_text(f"rec-{tag}-done")
    page.fill("#seek", "0")  # seek back to the start: the screen is redrawn up to there
    expect(player).to_have_attribute("data-state", "paused")

    # Audit: the view was audited; its event's inclusion proof verifies.
    page.goto(f"{base}/web/admin/audit?type=recording.view&user={admin.name}")
    page.locator("#events a", has_text="details").first.click()
    expect(page.locator("#proof-result")).to_contain_text("verified in the signed checkpoint")
    expect(page.locator("#event-json")).to_contain_text("recording.view")

    # Refusals: no CSRF token; a user without rights gets 403 on the admin pages.
    no_csrf = page.request.post(f"{base}/web/admin/locks", form={"target_kind": "user"})
    assert no_csrf.status == 403
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()

    other = chromium.new_context(ignore_https_errors=True)
    page = other.new_page()
    sign_in(page, base, plain)
    for path in (
        "/web/admin/users",
        "/web/admin/roles",
        "/web/admin/locks",
        "/web/admin/audit",
        "/web/admin/tokens",
        "/web/admin/connectors",
    ):
        assert page.goto(f"{base}{path}").status == 403, path
    expect(page.locator("nav.top")).not_to_contain_text("Users")
    assert page.goto(f"{base}/web/recordings").status == 200
    other.close()
