"""Session channel details over a real SSH connection on loopback: missing sftp-server, other
subsystems, agent forwarding."""

from __future__ import annotations

import sys
from pathlib import Path

import asyncssh
import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "agent"))
from nodeharness import NodeHarness  # noqa: E402

from bastion.agent import ssh_session


async def test_sftp_refused_with_clear_message_when_missing(
    harness: NodeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssh_session, "SFTP_SERVER_PATHS", ("/nonexistent/sftp-server",))
    client = await harness.client()
    async with await harness.connect(client) as conn:
        proc = await conn.create_process(subsystem="sftp", encoding=None)
        result = await proc.wait(timeout=10)
        assert isinstance(result.stderr, bytes)
        assert b"sftp-server is not installed" in result.stderr
        assert proc.exit_status == 1
    rejected = await harness.audit.wait_for("session.rejected")
    assert "sftp-server" in rejected[0].reason


async def test_other_subsystems_refused(harness: NodeHarness) -> None:
    client = await harness.client()
    async with await harness.connect(client) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(subsystem="netconf")


async def test_agent_forwarding_only_when_role_allows(harness: NodeHarness, tmp_path: Path) -> None:
    agent_sock = str(tmp_path / "agent.sock")
    import asyncio
    import os

    proc = await asyncio.create_subprocess_exec(
        "ssh-agent", "-D", "-a", agent_sock,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(5):
            while not os.path.exists(agent_sock):
                await asyncio.sleep(0.02)
        allowed = await harness.client(roles=("dev",))  # forward_agent=True
        denied = await harness.client(roles=("dev-allow",))
        for client, expect in ((allowed, True), (denied, False)):
            conn = await harness.connect(client, agent_path=agent_sock, agent_forwarding=True)
            async with conn:
                result = await conn.run('echo "sock=${SSH_AUTH_SOCK:-}"', timeout=10)
            assert (str(result.stdout).strip() != "sock=") is expect
    finally:
        proc.terminate()
        await proc.wait()
