"""SSHNode end to end over loopback: connections arrive through ``accept()`` (the tunnel hook),
authenticated with certificates minted by a real AuthServer, driven by the asyncssh client."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from datetime import timedelta
from pathlib import Path

import asyncssh
import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "agent"))
from nodeharness import LOGIN, NodeHarness, make_node  # noqa: E402

from bastion.testing import make_auth


async def test_exec_exit_code_through_accept(harness: NodeHarness) -> None:
    client = await harness.client()
    async with await harness.connect(client) as conn:
        result = await conn.run("echo hello; exit 3", timeout=10)
    assert result.exit_status == 3
    assert result.stdout == "hello\n"
    start = (await harness.audit.wait_for("session.start"))[0]
    assert start.user == "alice" and start.login == LOGIN and start.target == "node1"
    assert start.remote_addr.startswith("127.0.0.1:")
    assert start.fields["session_type"] == "exec" and start.fields["pty"] is False
    exec_event = (await harness.audit.wait_for("exec"))[0]
    assert exec_event.fields["exit_code"] == 3
    assert exec_event.fields["command"] == "echo hello; exit 3"
    end = (await harness.audit.wait_for("session.end"))[0]
    assert end.fields["bytes_out"] == len("hello\n")
    assert end.fields["participants"] == ["alice"]
    assert end.session_id == start.session_id
    assert len(harness.registry) == 0


async def test_exit_signal_and_stdin(harness: NodeHarness) -> None:
    client = await harness.client()
    async with await harness.connect(client) as conn:
        result = await conn.run("cat; kill -TERM $$", input="ping\n", timeout=10)
    assert result.stdout == "ping\n"
    assert result.exit_signal is not None and result.exit_signal[0] == "TERM"
    end = (await harness.audit.wait_for("session.end"))[0]
    assert end.fields["bytes_in"] == 5


async def test_environment_is_allow_listed(harness: NodeHarness) -> None:
    client = await harness.client()
    env = {"LANG": "C.UTF-8", "LC_TIME": "C", "LD_PRELOAD": "/tmp/evil.so", "PATH": "/evil"}
    async with await harness.connect(client) as conn:
        result = await conn.run("env", env=env, timeout=10)
    lines = set(str(result.stdout).splitlines())
    assert "LANG=C.UTF-8" in lines and "LC_TIME=C" in lines
    assert not any(line.startswith("LD_PRELOAD") for line in lines)
    assert "PATH=/evil" not in lines
    assert f"USER={LOGIN}" in lines and f"LOGNAME={LOGIN}" in lines
    assert any(line.startswith("HOME=") for line in lines)
    assert any(line.startswith("BASTION_SESSION_ID=") for line in lines)


async def test_pty_shell_window_change(harness: NodeHarness) -> None:
    client = await harness.client()
    async with await harness.connect(client) as conn:
        proc = await conn.create_process(term_type="xterm", term_size=(100, 30), env={"PS1": "$ "})
        proc.stdin.write("stty size; tty\n")
        out = ""
        async with asyncio.timeout(10):
            while "30 100" not in out:
                out += await proc.stdout.read(1024)
        proc.change_terminal_size(132, 40)
        await asyncio.sleep(0.1)
        proc.stdin.write("stty size; exit 5\n")
        async with asyncio.timeout(10):
            while "40 132" not in out:
                out += await proc.stdout.read(1024)
            await proc.wait()
        assert proc.exit_status == 5
        assert "/dev/pts/" in out
    start = (await harness.audit.wait_for("session.start"))[0]
    assert start.fields["pty"] is True and start.fields["session_type"] == "shell"


async def test_signal_forwarded_to_process_group(harness: NodeHarness) -> None:
    client = await harness.client()
    async with await harness.connect(client) as conn:
        proc = await conn.create_process("trap 'echo got-int; exit 7' INT; echo ready; sleep 20")
        async with asyncio.timeout(30):
            assert (await proc.stdout.readline()).strip() == "ready"
            proc.send_signal("INT")
            result = await proc.wait()
    assert "got-int" in str(result.stdout)
    assert result.exit_status == 7


async def test_pty_refused_when_role_forbids(harness: NodeHarness) -> None:
    client = await harness.client(roles=("nopty",))
    async with await harness.connect(client) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(term_type="xterm")
    rejected = await harness.audit.wait_for("session.rejected")
    assert "PTY" in rejected[0].reason


async def test_sftp_put_get_checksum(harness: NodeHarness, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    remote = tmp_path / "remote.bin"
    back = tmp_path / "back.bin"
    client = await harness.client()
    async with await harness.connect(client) as conn:
        async with conn.start_sftp_client() as sftp:
            await sftp.put(str(src), str(remote))
            await sftp.get(str(remote), str(back))

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    assert digest(src) == digest(remote) == digest(back)
    sftp_event = (await harness.audit.wait_for("sftp"))[0]
    assert sftp_event.fields["subsystem"] == "sftp" and sftp_event.user == "alice"


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def test_local_port_forward(harness: NodeHarness) -> None:
    echo = await _echo_server()
    port = echo.sockets[0].getsockname()[1]
    client = await harness.client()
    try:
        async with await harness.connect(client) as conn:
            reader, writer = await conn.open_connection("127.0.0.1", port)
            writer.write(b"through the tunnel")
            assert await asyncio.wait_for(reader.readexactly(18), 5) == b"through the tunnel"
            forwards = harness.registry.find(lambda c: c.kind == "port_forward")
            assert len(forwards) == 1 and forwards[0].extra["addr"] == f"127.0.0.1:{port}"
            writer.close()
        event = (await harness.audit.wait_for("port_forward"))[0]
        assert event.outcome == "success" and event.fields["addr"] == f"127.0.0.1:{port}"
    finally:
        echo.close()


async def test_remote_port_forward(harness: NodeHarness) -> None:
    echo = await _echo_server()
    port = echo.sockets[0].getsockname()[1]
    client = await harness.client()
    try:
        async with await harness.connect(client) as conn:
            listener = await conn.forward_remote_port("localhost", 0, "127.0.0.1", port)
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.get_port())
            writer.write(b"back")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"back"
            writer.close()
            assert harness.registry.find(lambda c: c.extra.get("direction") == "remote")
        event = (await harness.audit.wait_for("port_forward"))[0]
        assert event.fields["direction"] == "remote"
    finally:
        echo.close()


async def test_port_forward_refused_when_role_forbids(harness: NodeHarness) -> None:
    echo = await _echo_server()
    port = echo.sockets[0].getsockname()[1]
    client = await harness.client(roles=("noforward",))
    try:
        async with await harness.connect(client) as conn:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("127.0.0.1", port)
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("localhost", 0, "127.0.0.1", port)
        events = await harness.audit.wait_for("port_forward", 2)
        assert all(e.outcome == "failure" for e in events)
        assert "not allowed" in events[0].reason
    finally:
        echo.close()


async def _refused(harness: NodeHarness, client: object, login: str = LOGIN) -> str:
    with pytest.raises(asyncssh.PermissionDenied):
        await harness.connect(client, login)  # type: ignore[arg-type]
    rejected = await harness.audit.wait_for("session.rejected")
    assert rejected[0].outcome == "failure"
    assert rejected[0].login == login and rejected[0].target == "node1"
    assert rejected[0].remote_addr.startswith("127.0.0.1:")
    return rejected[0].reason


async def test_expired_certificate_refused(harness: NodeHarness) -> None:
    client = await harness.client()
    harness.clock.advance(timedelta(hours=2))
    reason = await _refused(harness, client)
    assert "expired" in reason


async def test_foreign_ca_refused(harness: NodeHarness) -> None:
    other = await make_auth(harness.clock, cluster="test.local")
    client = await harness.client(fx=other)
    reason = await _refused(harness, client)
    assert "unknown CA" in reason
    assert harness.audit.of("session.rejected")[0].user == "alice"


async def test_login_not_among_principals_refused(harness: NodeHarness) -> None:
    client = await harness.client(logins=("nobody-else",))
    reason = await _refused(harness, client)
    assert "principal" in reason


async def test_role_denying_node_labels_refused(harness: NodeHarness) -> None:
    client = await harness.client(roles=("dev-allow", "no-dev"))
    reason = await _refused(harness, client)
    assert "no-dev" in reason


async def test_unknown_os_login_refused_with_message(harness: NodeHarness) -> None:
    client = await harness.client(logins=("nosuchuser-bastion",))
    async with await harness.connect(client, "nosuchuser-bastion") as conn:
        result = await conn.run("true", timeout=10)
    assert result.exit_status == 1
    assert "does not exist on this node" in str(result.stderr)
    rejected = await harness.audit.wait_for("session.rejected")
    assert "does not exist" in rejected[0].reason


async def test_terminate_ends_session_before_its_command(harness: NodeHarness) -> None:
    client = await harness.client()
    async with await harness.connect(client) as conn:
        proc = await conn.create_process("echo started; sleep 30")
        async with asyncio.timeout(5):
            assert (await proc.stdout.readline()).strip() == "started"
        live = harness.registry.find(lambda c: c.kind == "ssh_session")
        assert len(live) == 1 and live[0].identity.user == "alice" and live[0].login == LOGIN
        ended = await harness.registry.terminate_matching(
            lambda c: c.identity.user == "alice", "locked: laptop stolen"
        )
        assert len(ended) == 1
        async with asyncio.timeout(5):  # a hang guard, not a measurement: the command runs 30 s
            await proc.wait_closed()
        assert "locked: laptop stolen" in await proc.stderr.read()
    terminated = await harness.audit.wait_for("session.terminated")
    assert terminated[0].reason == "locked: laptop stolen"
    await harness.audit.wait_for("session.end")
    assert not harness.registry.find(lambda c: c.kind == "ssh_session")


async def test_plain_key_and_password_refused(harness: NodeHarness) -> None:
    client = await harness.client()
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncio.wait_for(
            asyncssh.connect(
                "127.0.0.1",
                harness.port,
                username=LOGIN,
                client_keys=[client.key],
                password="secret",
                known_hosts=harness.known_hosts(),
                host_key_alias="node1.test.local",
                agent_path=None,
            ),
            10,
        )


async def test_direct_listener(tmp_path: Path) -> None:
    h = await make_node(tmp_path)
    try:
        port = await h.node.listen("127.0.0.1", 0)
        client = await h.client()
        async with await h.connect(client, port=port) as conn:
            result = await conn.run("exit 0", timeout=10)
        assert result.exit_status == 0
    finally:
        await h.node.close()
