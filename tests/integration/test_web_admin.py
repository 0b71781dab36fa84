"""The web UI's administration, recordings and sessions pages in a real browser (issue 16):
Debian's Chromium driven by Playwright against the shared cluster. An admin creates a user and
sees the invite link, creates and lifts a lock, views a role and gets the server's validation
error for a bad edit, records a session through the web terminal and plays it back, and checks
an audit event's inclusion proof. A user without rights gets 403 on the admin URLs; a POST
without the CSRF token is refused. The databases and apps tabs are searched and filtered, and a
role's access is previewed on the node list (stored and unsaved text), markup labels as text,
axe-core on the new pages."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from browser import SHOTS, axe_violations, chromium_browser, sign_in
from harness import Cluster, Env, User, unique
from playwright.sync_api import expect

pytestmark = pytest.mark.integration
LOGIN = getpass.getuser()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with chromium_browser(web_assets=True) as browser:
        yield browser


@pytest.fixture(scope="module")
def admin(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> User:
    """One editor for the module's tests (a new user costs seconds of bctl and bsh)."""
    return Env(cluster, tmp_path_factory.mktemp("webadmin")).new_user("editor,access", LOGIN)


def test_admin_pages_and_player_in_chromium(env: Env, chromium: Any, admin: User) -> None:
    tag = unique("a")
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
    page.click("#role-save")
    expect(page.locator("#role-error")).to_contain_text("max_session_ttl")
    expect(page.locator("#role-yaml")).to_have_value(bad)
    good = text.replace("nobody", "somebody")
    page.fill("#role-yaml", good)
    page.click("#role-save")
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


def test_resource_tabs_and_role_preview_in_chromium(env: Env, chromium: Any, admin: User) -> None:
    """The databases and apps tabs searched and filtered by label like the servers tab (their
    RBAC is ``bsh db ls``/``bsh apps ls``'s, tested there), a role's access previewed on the
    node list (stored, and unsaved text: never saved, an error inline), labels that look like
    markup shown as text, axe on the new pages."""
    tag = unique("p")
    evil = "<img src=x onerror=alert(1)>"
    role = f"{tag}-see"
    docs: list[dict[str, Any]] = [
        {
            "kind": "role",
            "version": "v1",
            "metadata": {"name": role},
            "spec": {
                "allow": {
                    "logins": [LOGIN],
                    "node_labels": {"team": tag},
                    "db_labels": {"team": tag},
                    "db_users": ["reader"],
                    "app_labels": {"team": tag},
                },
                "deny": {"node_labels": {"webhide": tag}},
            },
        }
    ]
    for name, labels in (
        (f"{tag}-ok", {"team": tag, "env": "prod"}),
        (f"{tag}-hidden", {"team": tag, "webhide": tag}),
        (f"{tag}-evil", {"team": tag, "x": evil}),
    ):
        docs.append(
            {
                "kind": "node",
                "metadata": {"name": name, "labels": labels},
                "spec": {"hostname": name, "addr": "127.0.0.1:1", "agentless": True},
            }
        )
    for name, protocol, env_label in (
        (f"{tag}-pg", "postgres", "prod"),
        (f"{tag}-my", "mysql", "dev"),
    ):
        docs.append(
            {
                "kind": "db",
                "metadata": {"name": name, "labels": {"team": tag, "env": env_label, "x": evil}},
                "spec": {"protocol": protocol, "uri": "127.0.0.1:1"},
            }
        )
    for name in (f"{tag}-graf", f"{tag}-wiki"):
        docs.append(
            {
                "kind": "app",
                "metadata": {"name": name, "labels": {"team": tag, "x": evil}},
                "spec": {"uri": "http://127.0.0.1:1"},
            }
        )
    env.admin_ok("create", "-f", "-", input=yaml.safe_dump_all(docs))
    base = f"https://{env.cluster.proxy}"
    found: dict[str, list[str]] = {}

    # The databases and apps tabs: search, label chips and filter, connect actions.
    context = chromium.new_context(
        ignore_https_errors=True, viewport={"width": 1280, "height": 720}, bypass_csp=True
    )  # the CSP bypassed only to inject axe
    page = context.new_page()
    sign_in(page, base, admin)
    page.goto(f"{base}/web/databases?q={tag}")
    rows = page.locator("#databases tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#databases")).to_contain_text(evil)  # text, never markup
    assert page.locator("img").count() == 0
    found["/web/databases"] = axe_violations(page)
    page.locator(f"tr[data-db='{tag}-pg'] a.chip", has_text="env=prod").click()
    expect(page.locator("#label-filter")).to_have_value("env=prod")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"bsh db connect {tag}-pg")
    page.screenshot(path=str(SHOTS / "databases.png"))
    page.goto(f"{base}/web/apps?q={tag}&sort=-name")
    rows = page.locator("#apps tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text(f"{tag}-wiki")
    assert page.locator("img").count() == 0
    found["/web/apps"] = axe_violations(page)
    page.fill("#search", f"{tag}-graf")
    page.click("form.filters button[type=submit]")
    expect(rows).to_have_count(1)
    launch = rows.first.locator("a", has_text="Launch")
    expect(launch).to_have_attribute("href", f"/web/apps/{tag}-graf/launch")
    bad = page.goto(f"{base}/web/apps?sort=color")
    assert bad is not None and bad.status == 400
    expect(page.locator("p.error[role=alert]")).to_contain_text("sort")

    # The stored role's preview: the allowed node, not the denied one.
    page.goto(f"{base}/web/admin/roles/{role}")
    page.click("#stored-preview")
    page.fill("#search", tag)
    page.click("form.filters button[type=submit]")
    nodes = page.locator("#preview-nodes")
    expect(nodes.locator(f"tr[data-node='{tag}-ok']")).to_contain_text(LOGIN)
    expect(nodes).to_contain_text(evil)
    assert f"{tag}-hidden" not in nodes.inner_text()
    assert page.locator("img").count() == 0
    expect(page.locator("#preview-dbs")).to_contain_text(f"{tag}-pg")
    expect(page.locator("#preview-apps")).to_contain_text(f"{tag}-wiki")
    found["/web/admin/roles/NAME/preview"] = axe_violations(page)
    page.screenshot(path=str(SHOTS / "role-preview.png"), full_page=True)

    # A template role (the built-in access role) previews with a user's traits; links keep them.
    page.goto(f"{base}/web/admin/roles/access/preview?q={tag}")
    expect(page.locator("#preview")).to_contain_text("No node matches")  # no traits: no login
    page.fill("#as-user", admin.name)
    page.click("#traits-form button[type=submit]")
    page.fill("#search", tag)
    page.click("form.filters[role=search] button[type=submit]")
    expect(page.locator("#preview-nodes tbody tr")).to_have_count(3)
    expect(page.locator("#preview-nodes tbody tr").first).to_contain_text(LOGIN)

    # The unsaved text: without the deny rule the hidden node appears; nothing is saved.
    page.goto(f"{base}/web/admin/roles/{role}")
    text = page.locator("#role-yaml").input_value()
    assert text.count("webhide:") == 1
    page.fill("#role-yaml", text.replace("webhide:", "webhidden:"))
    page.click("#role-preview")
    page.fill("#search", f"{tag}-hidden")
    page.locator("#preview button", has_text="Filter").click()
    expect(page.locator("#preview-nodes tbody tr")).to_have_count(1)
    expect(page.locator("#preview-nodes")).to_contain_text(f"{tag}-hidden")
    expect(page.locator("#role-stored")).to_contain_text("webhide:")
    found["/web/admin/roles/NAME (preview)"] = axe_violations(page)
    page.screenshot(path=str(SHOTS / "role-preview-unsaved.png"), full_page=True)
    page.fill("#role-yaml", text.replace("max_session_ttl: 12h", "max_session_ttl: soon"))
    page.click("#role-preview")
    expect(page.locator("#role-error")).to_contain_text("max_session_ttl")
    expect(page.locator("#preview")).to_have_count(0)
    no_csrf = page.request.post(f"{base}/web/admin/roles/{role}/preview", form={"yaml": text})
    assert no_csrf.status == 403
    context.close()
    assert not {k: v for k, v in found.items() if v}, found
