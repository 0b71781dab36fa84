"""Headless Chromium through Playwright for the browser tests (login pages, WebAuthn, web UI)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import User, fresh_totp
from playwright.sync_api import sync_playwright

from bastion.testing import missing_peer

CHROMIUM = "/usr/bin/chromium"
ASSETS = Path(__file__).parents[2] / "src" / "bastion" / "web" / "assets" / "node_modules"
AXE = ASSETS / "axe-core" / "axe.min.js"
SHOTS = Path(os.environ.get("BASTION_TEST_ARTIFACTS") or "/tmp/bastion-test-artifacts") / "web"
"""Screenshots of the web UI's pages (test artifacts; CI may upload the directory)."""
SHOTS.mkdir(parents=True, exist_ok=True)


@contextmanager
def chromium_browser(*, web_assets: bool = False, args: Sequence[str] = ()) -> Iterator[Any]:
    """The system's Chromium, headless; ``web_assets``: the web UI's npm packages must be
    installed too (the terminal and player pages serve them); ``args``: more command-line
    switches (``--host-resolver-rules=...``)."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        missing_peer("chromium is not installed (apt-get install chromium)")
    if (
        web_assets
        and not (ASSETS / "@xterm" / "xterm" / "lib" / "xterm.js").exists()
        and not os.environ.get("BASTION_WEB_ASSETS")
    ):
        missing_peer("the web UI's npm packages are not installed (make install)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(args))
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Any, base: str, user: User) -> None:
    """Password + TOTP on the proxy's login page; lands on ``/web/``."""
    page.goto(f"{base}/web/login")
    page.fill("input[name=user]", user.name)
    page.fill("input[name=password]", user.password)
    page.fill("input[name=otp]", fresh_totp(user))  # never a step this user already spent
    page.click("form[action='/web/login'] button[type=submit]")
    page.wait_for_url(f"{base}/web/")


def virtual_authenticator(context: Any, page: Any) -> tuple[Any, str]:
    """Chromium's DevTools virtual authenticator (a resident-key security key that is always
    touched) for ``page``; returns the CDP session and the authenticator's id."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    created = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "usb",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, created["authenticatorId"]


def axe_violations(page: Any) -> list[str]:
    """axe-core (from the web assets' npm install; only a test loads it) on ``page``: the
    serious and critical violations as ``id: help (selectors)``. The page's context must be
    created with ``bypass_csp=True`` (the script is injected, not served)."""
    if not AXE.exists():
        missing_peer("axe-core is not installed (make web-assets)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.help + ' (' + v.nodes.map(n => n.target.join(' ')).join(', ')"
        " + ')')"
    )
    return [str(v) for v in result]
