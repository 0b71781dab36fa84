"""The WebAuthn ceremony page in a real browser: Debian's Chromium driven by Playwright, with
Chromium's virtual authenticator (DevTools WebAuthn domain) as the security key.

A dedicated cluster: the relying party must be ``localhost`` (browsers refuse IP addresses as
RP ids), which would change the shared cluster's auth preference."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import chromium_browser, virtual_authenticator
from harness import Cluster, Env, fresh_totp, start_cluster
from playwright.sync_api import expect

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("webauthn-cluster"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def browser_env(local_cluster: Cluster, tmp_path: Path) -> Env:
    env = Env(local_cluster, tmp_path)
    cap = json.loads(env.admin_ok("get", "cap/cluster-auth-preference", "--format", "json"))
    port = local_cluster.proxy.rsplit(":", 1)[1]
    cap["spec"]["webauthn"] = {"rp_id": "localhost", "origins": [f"https://localhost:{port}"]}
    cap["metadata"].pop("revision", None)
    path = tmp_path / "cap.json"
    path.write_text(json.dumps(cap))
    env.admin_ok("create", "-f", str(path), "--force")
    return env


@pytest.fixture
def chromium() -> Iterator[Any]:
    with chromium_browser() as browser:
        yield browser


def test_register_verify_and_passkey_sign_in_in_chromium(browser_env: Env, chromium: Any) -> None:
    user = browser_env.new_user("access", "alice")
    base = f"https://localhost:{browser_env.cluster.proxy.rsplit(':', 1)[1]}"
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    cdp, authenticator = virtual_authenticator(context, page)

    # 1. Password + TOTP in the form.
    page.goto(f"{base}/web/login")
    page.fill("input[name=user]", user.name)
    page.fill("input[name=password]", user.password)
    page.fill("input[name=otp]", fresh_totp(user))
    page.click("form[action='/web/login'] button[type=submit]")
    page.wait_for_url(f"{base}/web/")
    assert f"Signed in as {user.name}" in page.inner_text("main")

    # 2. Register a passkey with the virtual authenticator, then verify with it.
    page.goto(f"{base}/web/mfa")
    page.fill("#device-name", "chromium-key")
    page.check("#device-passkey")
    page.click("button[data-ceremony=register]")
    status = page.locator("#webauthn-status")
    # No wait_for_function: the page's CSP (no eval) applies to test scripts too.
    status.filter(has_not_text="Waiting").filter(has_text=".").wait_for()
    assert status.inner_text() == "Registered chromium-key.", status.inner_text()
    credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    assert (
        len(credentials["credentials"]) == 1
        and credentials["credentials"][0]["isResidentCredential"]
    )
    # The sign-in proof was used up by that registration: a second key (e.g. a thief's, with a
    # stolen session cookie) needs a fresh confirmation with an existing device first.
    page.fill("#device-name", "second-key")
    page.click("button[data-ceremony=register]")
    expect(page.locator("#webauthn-status.error")).to_contain_text(
        "confirm with one of your existing devices first"
    )
    page.click("button[data-ceremony=verify]")
    status.filter(has_text='Verified with your passkey "chromium-key"').wait_for()
    page.fill("#device-name", "second-key")
    page.click("button[data-ceremony=register]")
    # Now the server hands out the options; the browser itself refuses to register the same
    # authenticator twice (excludeCredentials).
    expect(status).to_contain_text("already registered")

    # 3. Sign out; sign in with the password and the key as second factor (no TOTP code).
    def sign_out() -> None:
        page.goto(f"{base}/web/")
        page.click("form[action='/web/logout'] button")
        page.wait_for_url(f"{base}/web/login")

    sign_out()
    page.fill("input[name=user]", user.name)
    page.fill("input[name=password]", "wrong password!")
    page.click("button[data-ceremony=password-key]")
    # expect() waits for the text (the class may flip before the message is written) and
    # reports the actual text when it never comes.
    expect(page.locator("#webauthn-status.error")).to_contain_text("invalid username, password")
    page.fill("input[name=password]", user.password)
    page.click("button[data-ceremony=password-key]")
    page.wait_for_url(f"{base}/web/")
    page.goto(f"{base}/web/mfa")
    main_text = page.inner_text("main")  # the kind and the name, never the device's id
    assert 'Verified with your passkey "chromium-key" in this session' in main_text

    # 4. Sign out; sign in with the passkey alone.
    sign_out()
    page.click("button[data-ceremony=passkey]")
    page.wait_for_url(f"{base}/web/")
    assert f"Signed in as {user.name}" in page.inner_text("main")
    context.close()

    logins = browser_env.events("--type", "user.login", "--user", user.name)
    methods = [e["fields"].get("method") for e in logins if e["outcome"] == "success"]
    assert "password+webauthn" in methods and "passwordless" in methods
    passkey = [e for e in logins if e["fields"].get("method") == "passwordless"]
    assert passkey[-1]["fields"]["aaguid"]
    added = browser_env.events("--type", "mfa.add", "--user", user.name)
    assert added and added[-1]["fields"]["device_name"] == "chromium-key"


def test_page_on_another_origin_cannot_use_the_rp_id(browser_env: Env, chromium: Any) -> None:
    """The same page reached as 127.0.0.1: the browser refuses the RP id ``localhost`` (so a
    look-alike origin can never obtain an assertion for the cluster), and the ceremony's JSON
    endpoints refuse requests without the CSRF token or a session."""
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    virtual_authenticator(context, page)
    page.goto(f"https://{browser_env.cluster.proxy}/web/login")
    page.click("button[data-ceremony=passkey]")
    expect(page.locator("#webauthn-status.error")).to_contain_text("invalid domain")
    base = f"https://{browser_env.cluster.proxy}"
    no_csrf = page.request.post(f"{base}/web/passkey/begin", data="{}")
    assert no_csrf.status == 403 and "CSRF" in no_csrf.text()
    token = [c["value"] for c in context.cookies() if c["name"] == "bastion_csrf"][0]
    no_session = page.request.post(
        f"{base}/web/mfa/register/begin", data="{}", headers={"X-CSRF-Token": token}
    )
    assert no_session.status == 401 and "sign in first" in no_session.text()
    context.close()
