"""find_sftp_server: where the node looks for sftp-server (the session channel over a real SSH
connection: tests/integration/agent/test_ssh_session.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.agent import ssh_session
from bastion.agent.ssh_session import find_sftp_server


def test_find_sftp_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "sftp-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setattr(ssh_session, "SFTP_SERVER_PATHS", ("/nonexistent/sftp-server", str(fake)))
    assert find_sftp_server() == str(fake)
    monkeypatch.setattr(ssh_session, "SFTP_SERVER_PATHS", ("/nonexistent/sftp-server",))
    assert find_sftp_server() is None
