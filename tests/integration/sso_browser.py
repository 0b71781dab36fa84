"""``$BROWSER`` for bsh in the SSO tests: ``python sso_browser.py --login NAME URL``.

Signs in with the scripted browser of sso_peers (HTTP + cookies, no JavaScript) and exits 0
when the last page loaded (bsh's localhost callback) answered 200.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from sso_peers import Browser  # noqa: E402


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--login", default="alice")
    parser.add_argument("url")
    args = parser.parse_args()
    browser = Browser(login=args.login)
    try:
        visit = await browser.sign_in(args.url)
    finally:
        await browser.close()
    print(visit.status, visit.url, file=sys.stderr)
    return 0 if visit.status == 200 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
