"""Fail when a module under src/bastion has no unit or integration test file naming it.

Mirrors mitmproxy's filename_matching: tests/unit mirrors the source tree, and so does
tests/integration for modules whose tests need sockets or real time (tests/unit is pure); IO
shells (cli, process, the auth service, api, client) may instead be covered by tests/integration.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "bastion"
# IO shells covered end to end by tests/integration and tests/contract (STYLE.md test layout).
COVERED_ELSEWHERE = {
    "cli/bastion.py",
    "cli/bctl.py",
    "cli/bsh.py",
    "cli/bbot.py",
    "cli/common.py",
    "process.py",
    "logging.py",
    "auth_service.py",
    "api/app.py",
    "api/tls.py",
    "client/api.py",
    "client/profile.py",
    "backend/sqlite.py",
    "backend/postgres.py",
    "backend/compliance.py",
    "testing/peers/postgres.py",
    "testing/ha.py",
    "api/openapi.py",
    "api/agents.py",
    "api/session.py",
    "api/mfa.py",
    "agent/join.py",
    "agent/remote.py",
    "agent/service.py",
    "proxy/listener.py",
    "proxy/ssh_route.py",
    "proxy/relay.py",
    "proxy/service.py",
    "tunnel/server.py",
    "tunnel/client.py",
    "tunnel/pool.py",
    "testing/peers/sshd.py",
    "api/sso.py",
    "client/sso.py",
    "sso/http.py",
    "web/app.py",
    "web/webauthn.py",
    "testing/peers/saml.py",
}


def main() -> int:
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if path.name == "__init__.py" or rel in COVERED_ELSEWHERE:
            continue
        expected = ROOT / "tests" / "unit" / Path(rel).parent / f"test_{path.name}"
        # A module whose tests need sockets or real time has them in the mirrored integration path.
        mirrored = ROOT / "tests" / "integration" / Path(rel).parent / f"test_{path.name}"
        if not expected.exists() and not mirrored.exists():
            missing.append(f"{rel} -> {expected.relative_to(ROOT)}")
    if missing:
        print("modules without a unit test file:\n  " + "\n  ".join(missing))
        return 1
    print("layout ok: every module under src/bastion has its test file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
