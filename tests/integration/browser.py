"""Headless Chromium through Playwright for the browser tests (login pages, WebAuthn, web UI)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import User, totp
from playwright.sync_api import sync_playwright

from bastion.testing import missing_peer

CHROMIUM = "/usr/bin/chromium"
ASSETS = Path(__file__).parents[2] / "src" / "bastion" / "web" / "assets" / "node_modules"


@contextmanager
def chromium_browser(*, web_assets: bool = False) -> Iterator[Any]:
    """The system's Chromium, headless; ``web_assets``: the web UI's npm packages must be
    installed too (the terminal and player pages serve them)."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        missing_peer("chromium is not installed (apt-get install chromium)")
    if (
        web_assets
        and not (ASSETS / "@xterm" / "xterm" / "lib" / "xterm.js").exists()
        and not os.environ.get("BASTION_WEB_ASSETS")
    ):
        missing_peer("the web UI's npm packages are not installed (make install)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Any, base: str, user: User) -> None:
    """Password + TOTP on the proxy's login page; lands on ``/web/``."""
    page.goto(f"{base}/web/login")
    page.fill("input[name=user]", user.name)
    page.fill("input[name=password]", user.password)
    page.fill("input[name=otp]", totp(user.secret, 1))
    page.click("form[action='/web/login'] button[type=submit]")
    page.wait_for_url(f"{base}/web/")
