"""The SSH node with the real OpenSSH client (``ssh``, ``scp``) on its direct listener.

Certificates come from a real AuthServer (``bastion.testing.make_auth``); the client trusts the
node by the host CA only (``@cert-authority`` line, ``StrictHostKeyChecking=yes``), as
``bsh config`` sets it up. The node runs in this process, on a free loopback port.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "agent"))
from nodeharness import CLUSTER, LOGIN, NODE, Client, NodeHarness, make_node  # noqa: E402

from bastion.testing import make_auth, require_binary
from bastion.testing.peers.ports import free_port

pytestmark = pytest.mark.integration


def _need(binary: str) -> str:
    return require_binary(binary)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeHarness]:
    _need("ssh")
    h = await make_node(tmp_path / "keys")
    (tmp_path / "keys").mkdir()
    h.port = await h.node.listen("127.0.0.1", 0)
    try:
        yield h
    finally:
        await h.node.close()


def _ssh_opts(h: NodeHarness, client: Client) -> list[str]:
    known = h.tmp / "known_hosts"
    known.write_text(h.host_ca_known_hosts)
    return [
        "-F", "/dev/null",
        "-o", f"IdentityFile={client.key_path}",
        "-o", f"CertificateFile={client.cert_path}",
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={known}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"HostKeyAlias={NODE}.{CLUSTER}",
        "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=10",
    ]  # fmt: skip


async def _run(
    *argv: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_openssh_exec_exit_code_and_env(node: NodeHarness) -> None:
    client = await node.client(write_files=True)
    opts = _ssh_opts(node, client)
    rc, out, _ = await _run("ssh", *opts, "-p", str(node.port), f"{LOGIN}@127.0.0.1", "exit 3")
    assert rc == 3
    rc, out, _ = await _run(
        "ssh", *opts, "-o", "SendEnv=LANG LD_BASTION_TEST", "-p", str(node.port),
        f"{LOGIN}@127.0.0.1", "echo lang=$LANG ld=$LD_BASTION_TEST",
        env={"LANG": "C.UTF-8", "LD_BASTION_TEST": "1"},  # a harmless LD_ name
    )  # fmt: skip
    assert rc == 0 and out.strip() == b"lang=C.UTF-8 ld="


async def test_openssh_interactive_pty_with_window_change(node: NodeHarness) -> None:
    import pexpect

    client = await node.client(write_files=True)
    argv = [*_ssh_opts(node, client), "-tt", "-p", str(node.port), f"{LOGIN}@127.0.0.1"]

    def drive() -> int:
        child = pexpect.spawn("ssh", argv, dimensions=(30, 100), timeout=15)
        try:
            child.sendline("PS1='$ '; stty size")
            child.expect("30 100")
            child.setwinsize(40, 132)  # ssh gets SIGWINCH and sends window-change
            child.sendline("sleep 0.2; stty size")
            child.expect("40 132")
            child.sendline("exit 4")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        return int(child.exitstatus)

    assert await asyncio.to_thread(drive) == 4
    start = (await node.audit.wait_for("session.start"))[0]
    assert start.fields["pty"] is True


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp", "scp-protocol"])
async def test_openssh_scp_with_checksum(node: NodeHarness, tmp_path: Path, legacy: bool) -> None:
    _need("scp")
    client = await node.client(write_files=True)
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024))
    remote, back = tmp_path / "remote.bin", tmp_path / "back.bin"
    opts = [*_ssh_opts(node, client), "-P", str(node.port), *(["-O"] if legacy else [])]
    rc, _, err = await _run("scp", *opts, str(src), f"{LOGIN}@127.0.0.1:{remote}")
    assert rc == 0, err
    rc, _, err = await _run("scp", *opts, f"{LOGIN}@127.0.0.1:{remote}", str(back))
    assert rc == 0, err
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (src, remote, back)}
    assert len(digests) == 1
    if not legacy:
        assert await node.audit.wait_for("sftp")


async def test_openssh_local_port_forward(node: NodeHarness) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[1]
    client = await node.client(write_files=True)
    local = free_port()
    proc = await asyncio.create_subprocess_exec(
        "ssh", *_ssh_opts(node, client), "-N", "-o", "ExitOnForwardFailure=yes",
        "-L", f"127.0.0.1:{local}:127.0.0.1:{target}", "-p", str(node.port),
        f"{LOGIN}@127.0.0.1",
    )  # fmt: skip
    try:
        async with asyncio.timeout(15):
            while True:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", local)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            writer.write(b"via -L")
            assert await reader.read(100) == b"via -L"
            writer.close()
    finally:
        proc.terminate()
        await proc.wait()
        server.close()


async def test_openssh_foreign_ca_refused_and_audited(node: NodeHarness) -> None:
    other = await make_auth(node.clock, cluster=CLUSTER)
    client = await node.client(fx=other, write_files=True)
    rc, _, err = await _run(
        "ssh", *_ssh_opts(node, client), "-p", str(node.port), f"{LOGIN}@127.0.0.1", "true"
    )
    assert rc == 255 and b"Permission denied" in err
    rejected = await node.audit.wait_for("session.rejected")
    assert "unknown CA" in rejected[0].reason


async def test_openssh_refuses_node_with_foreign_host_ca(node: NodeHarness) -> None:
    client = await node.client(write_files=True)
    opts = _ssh_opts(node, client)
    other = await make_auth(node.clock, cluster=CLUSTER)
    (node.tmp / "known_hosts").write_text(await other.auth.export_ca("ssh_host"))
    rc, _, err = await _run("ssh", *opts, "-p", str(node.port), f"{LOGIN}@127.0.0.1", "true")
    assert rc == 255 and b"Host key verification failed" in err
