"""bsh ssh/scp/ls/config/proxy ssh end to end against a tiny in-test fake proxy.

The fake proxy is an asyncio TLS server (host certificate from the test cluster's CA, client
certificates checked against the user TLS CA) that speaks the ``bastion-ssh/1`` JSON-line protocol
and relays to asyncssh SSH servers ("nodes") with host certificates from the host CA; it answers
``GET /v1/resources/node`` on ALPN http/1.1. It runs in a background thread with its own event
loop; bsh runs as a real subprocess (and the real OpenSSH client through ``bsh proxy ssh``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization

from bastion.client.profile import Profile, ProfileStore, new_client_key
from bastion.clock import SystemClock
from bastion.testing import make_auth, require_binary
from bastion.testing.peers.ports import free_port
from bastion.types.identity import Identity

pytestmark = pytest.mark.integration

BSH = str(Path(sys.executable).parent / "bsh")
CLUSTER = "test.local"
NODES = {  # name -> labels
    "node1": {"env": "staging", "team": "web"},
    "node2": {"env": "staging", "team": "db"},
    "node3": {"env": "prod", "team": "web"},
}
TIMEOUT = 30


def _pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class NodeServer(asyncssh.SSHServer):
    """A permissive test node: certificate auth only (asyncssh checks CA + principals)."""

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def connection_requested(self, dest_host: str, dest_port: int, oh: str, op: int) -> bool:
        return True

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return True


def _node_process(name: str) -> Any:
    async def handle(process: asyncssh.SSHServerProcess[str]) -> None:
        if process.command is None:
            await _shell(process)
            return
        cmd = process.command.strip()
        if cmd.startswith("exit "):
            process.exit(int(cmd.split()[1]))
            return
        if cmd == "hostname":
            process.stdout.write(f"{name}\nsecond line\n")
        elif cmd == "fail":
            process.stderr.write("boom\n")
            process.exit(3)
            return
        elif cmd == "cat":
            async for line in process.stdin:
                process.stdout.write(line)
        elif cmd == "whoami":
            process.stdout.write(f"{process.get_extra_info('username')}\n")
        elif cmd not in ("true", ""):
            process.stdout.write(f"ran {cmd}\n")
        process.exit(0)

    return handle


async def _shell(process: asyncssh.SSHServerProcess[str]) -> None:
    """A tiny interactive shell: reports its terminal, ``size`` again, ``exit N``."""
    cols, rows, *_ = process.get_terminal_size()
    process.stdout.write(f"term={process.get_terminal_type()} size={cols}x{rows}\r\n$ ")
    while True:
        try:
            line = await process.stdin.readline()
        except asyncssh.TerminalSizeChanged:
            continue
        if not line:
            break
        word = line.strip()
        if word.startswith("exit"):
            process.exit(int(word.split()[1]))
            return
        if word == "size":
            cols, rows, *_ = process.get_terminal_size()
            process.stdout.write(f"now={cols}x{rows}\r\n")
        process.stdout.write("$ ")
    process.exit(0)


@dataclass
class FakeCluster:
    root: Path
    home: Path = field(init=False)
    proxy_port: int = 0
    echo_port: int = 0
    files: dict[str, Path] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None
    _node_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = self.root / "bsh-home"

    # -- lifecycle (thread) --
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(TIMEOUT) or self._error:
            raise RuntimeError(f"fake cluster did not start: {self._error!r}")

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        fx = await make_auth(clock=SystemClock(), cluster=CLUSTER)
        foreign = await make_auth(clock=SystemClock(), cluster=CLUSTER)
        user_ca = asyncssh.import_authorized_keys(
            await fx.auth.export_ca("ssh_user", "authorized_keys")
        )
        servers: list[Any] = []
        for name in [*NODES, "evil"]:
            auth = foreign if name == "evil" else fx
            key = asyncssh.generate_private_key("ssh-ed25519")
            certs = await auth.auth.sign_host(
                name, key.export_public_key().decode(), [], timedelta(hours=1), "test"
            )
            cert = asyncssh.import_certificate(certs.ssh_cert)
            root = self.root / "nodes" / name
            root.mkdir(parents=True)
            self.files[name] = root
            server = await asyncssh.create_server(
                NodeServer,
                "127.0.0.1",
                0,
                server_host_keys=[(key, cert)],
                authorized_client_keys=user_ca,
                process_factory=_node_process(name),
                sftp_factory=lambda chan, r=root: asyncssh.SFTPServer(chan, chroot=str(r)),
                allow_scp=True,
                agent_forwarding=True,
            )
            servers.append(server)
            self._node_ports[name] = server.sockets[0].getsockname()[1]
        echo = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        self.echo_port = echo.sockets[0].getsockname()[1]
        proxy = await asyncio.start_server(
            self._proxy, "127.0.0.1", 0, ssl=await self._proxy_tls(fx)
        )
        self.proxy_port = proxy.sockets[0].getsockname()[1]
        await self._write_profile(fx)
        self._ready.set()
        await self._stop.wait()
        proxy.close()
        echo.close()
        for server in servers:
            server.close()

    async def _proxy_tls(self, fx: Any) -> ssl.SSLContext:
        key = new_client_key()
        pub = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        ident = Identity(
            cluster=CLUSTER,
            user="proxy",
            kind="host",
            roles=("proxy",),
            host_id="proxy",
            expires=datetime.now(UTC) + timedelta(hours=1),
        )
        certs = await fx.auth.issuer.issue_host(
            ident, pub.decode(), ["proxy"], ["localhost"], ["127.0.0.1"], timedelta(hours=1), "t"
        )
        (self.root / "proxy.crt").write_text(certs.tls_cert)
        (self.root / "proxy.key").write_bytes(_pem(key))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=certs.tls_user_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(self.root / "proxy.crt", self.root / "proxy.key")
        ctx.set_alpn_protocols(["bastion-ssh/1", "http/1.1"])
        return ctx

    async def _write_profile(self, fx: Any) -> None:
        key = new_client_key()
        pub = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        expires = datetime.now(UTC) + timedelta(hours=1)
        ident = Identity(
            cluster=CLUSTER,
            user="alice",
            roles=("access",),
            logins=("alice", "root"),
            expires=expires,
        )
        certs = await fx.auth.issuer.issue_user(ident, pub.decode(), "127.0.0.1")
        profile = Profile(
            name=CLUSTER,
            proxy=f"127.0.0.1:{self.proxy_port}",
            user="alice",
            cluster=CLUSTER,
            expires=expires.isoformat(),
            roles=["access"],
            logins=["alice", "root"],
        )
        ProfileStore(self.home).save(
            profile,
            key,
            {
                "ssh_cert": certs.ssh_cert,
                "tls_cert": certs.tls_cert,
                "tls_host_ca": certs.tls_host_ca,
                "ssh_host_ca": certs.ssh_host_ca,
            },
        )

    # -- servers --
    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    def _resources(self) -> list[dict[str, Any]]:
        items = [
            {
                "kind": "node",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "hostname": "vm",  # one OS hostname: output is prefixed with node names
                    "addr": f"127.0.0.1:{self._node_ports[name]}" if name != "node3" else "",
                    "tunnel": name == "node3",
                    "cmd_labels": {"arch": {"command": ["uname", "-m"], "result": "x86_64\n"}},
                },
            }
            for name, labels in NODES.items()
        ]
        return items

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
            if alpn == "http/1.1":
                await self._http(reader, writer)
            else:
                await self._ssh_route(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"POST /v1/certs/session/challenge "):  # bsh asks before each ssh
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            request = json.loads(await reader.readexactly(length))
            answer = {"mfa_required": False, "node": request["node"], "login": request["login"]}
            body = json.dumps(answer).encode()
        else:
            assert head.startswith(b"GET /v1/resources/node "), head
            body = json.dumps({"items": self._resources()}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def _ssh_route(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = json.loads(await reader.readline())
        node = str(req["node"])
        if node == "offline":
            writer.write(b'{"ok": false, "error": "node offline is offline (tunnel down)"}\n')
            return
        if node not in self._node_ports:
            writer.write(json.dumps({"ok": False, "error": f"node {node!r} not found"}).encode())
            writer.write(b"\n")
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._node_ports[node])
        banner = await up_reader.read(65536)  # reply + the node's banner in ONE TLS record
        writer.write(b'{"ok": true}\n' + banner)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(262144):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    cluster = FakeCluster(tmp_path_factory.mktemp("bshssh"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def bsh(
    fake: FakeCluster,
    *args: str,
    stdin: bytes | None = None,
    timeout: float = TIMEOUT,
    client: str = "",
) -> subprocess.CompletedProcess[bytes]:
    """``client="builtin"`` forces the asyncssh client (BSH_SSH_CLIENT); by default ``bsh ssh``
    hands the connection to OpenSSH when it is installed."""
    env = {**os.environ, "BSH_HOME": str(fake.home), "HOME": str(fake.root)}
    env.pop("SSH_AUTH_SOCK", None)
    env.pop("BSH_SSH_CLIENT", None)
    if client:
        env["BSH_SSH_CLIENT"] = client
    return subprocess.run(
        [BSH, *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=env,
        timeout=timeout,
    )


def test_exec_exit_status_and_output(fake: FakeCluster) -> None:
    res = bsh(fake, "ssh", "alice@node1", "hostname")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"node1\nsecond line\n"
    res = bsh(fake, "ssh", "node1", "exit", "42")
    assert res.returncode == 42
    res = bsh(fake, "ssh", "node1", "fail")
    assert (res.returncode, res.stderr) == (3, b"boom\n")
    res = bsh(fake, "ssh", "root@node2.test.local", "whoami")
    assert res.stdout == b"root\n", res.stderr


def test_stdin_streams_to_the_command(fake: FakeCluster) -> None:
    data = b"".join(b"line %d\n" % i for i in range(20000))
    res = bsh(fake, "ssh", "node1", "cat", stdin=data)
    assert res.returncode == 0, res.stderr
    assert res.stdout == data


def test_label_selector_fans_out_with_prefixes(fake: FakeCluster) -> None:
    res = bsh(fake, "ssh", "env=staging", "hostname")
    assert res.returncode == 0, res.stderr
    lines = sorted(res.stdout.decode().splitlines())
    assert lines == [
        "[node1] node1",
        "[node1] second line",
        "[node2] node2",
        "[node2] second line",
    ]
    res = bsh(fake, "ssh", "team=web", "fail")
    assert res.returncode != 0
    assert sorted(res.stderr.decode().splitlines())[:2] == ["[node1] boom", "[node3] boom"]
    res = bsh(fake, "ssh", "env=staging")
    assert res.returncode != 0 and b"matches 2 nodes" in res.stderr
    res = bsh(fake, "ssh", "env=nowhere", "true")
    assert res.returncode == 4 and b"no node matches" in res.stderr


def test_ls_filters_and_formats(fake: FakeCluster) -> None:
    res = bsh(fake, "ls", "--format", "json")
    assert res.returncode == 0, res.stderr
    assert [n["metadata"]["name"] for n in json.loads(res.stdout)] == ["node1", "node2", "node3"]
    res = bsh(fake, "ls", "env=staging", "--search", "db", "--format", "json")
    assert [n["metadata"]["name"] for n in json.loads(res.stdout)] == ["node2"]
    res = bsh(fake, "ls", "arch=x86_64", "team=web")
    text = res.stdout.decode()
    assert "node1" in text and "node3" in text and "node2" not in text
    assert "⟵ tunnel" in text and "NAME" in text


def test_scp_upload_and_download_with_checksum(fake: FakeCluster, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    res = bsh(fake, "scp", str(src), "alice@node1:blob.bin")
    assert res.returncode == 0, res.stderr
    assert hashlib.sha256((fake.files["node1"] / "blob.bin").read_bytes()).hexdigest() == (
        hashlib.sha256(payload).hexdigest()
    )
    back = tmp_path / "back.bin"
    res = bsh(fake, "scp", "node1:blob.bin", str(back))
    assert res.returncode == 0, res.stderr
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(payload).digest()
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f.txt").write_text("hello")
    res = bsh(fake, "scp", "-r", str(tmp_path / "tree"), "node2:")
    assert res.returncode == 0, res.stderr
    assert (fake.files["node2"] / "tree" / "sub" / "f.txt").read_text() == "hello"
    res = bsh(fake, "scp", "node1:missing.bin", str(tmp_path / "x"))
    assert res.returncode != 0 and b"error:" in res.stderr and b"Traceback" not in res.stderr


def test_local_port_forwarding(fake: FakeCluster) -> None:
    port = free_port()
    env = {**os.environ, "BSH_HOME": str(fake.home), "HOME": str(fake.root)}
    proc = subprocess.Popen(
        [BSH, "ssh", "-N", "-L", f"127.0.0.1:{port}:127.0.0.1:{fake.echo_port}", "node1"],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with sock:
            sock.sendall(b"ping through the tunnel")
            assert sock.recv(100) == b"ping through the tunnel"
    finally:
        proc.terminate()
        proc.wait(10)


def test_host_cert_from_a_foreign_ca_is_refused(fake: FakeCluster) -> None:
    if shutil.which("ssh"):  # handed to OpenSSH: its strict host checking refuses
        res = bsh(fake, "ssh", "evil", "true")
        assert res.returncode == 255 and b"Host key verification failed" in res.stderr
    res = bsh(fake, "ssh", "evil", "true", client="builtin")
    assert res.returncode == 3, res.stderr
    assert b"refusing to connect to evil" in res.stderr and b"host CA" in res.stderr
    assert b"Traceback" not in res.stderr


def test_proxy_refusals_are_clean_errors(fake: FakeCluster) -> None:
    if shutil.which("ssh"):  # through OpenSSH: the proxy's reason is printed by bsh proxy ssh
        res = bsh(fake, "ssh", "offline", "true")
        assert res.returncode == 255
        assert b"error: node offline is offline (tunnel down)\n" in res.stderr
    res = bsh(fake, "ssh", "offline", "true", client="builtin")
    assert res.returncode == 7
    assert res.stderr == b"error: node offline is offline (tunnel down)\n"
    # (this fake's challenge endpoint accepts any node; the real one answers not found first,
    # see test_cli.py::test_forward_refusal_says_why_and_refusals_have_their_own_audit_type)
    res = bsh(fake, "ssh", "nosuch", "true")
    assert res.returncode in (4, 255) and res.stderr.startswith(b"error: node 'nosuch' not found")
    res = bsh(fake, "ssh", "nosuch", "true", client="builtin")
    assert res.returncode == 4 and res.stderr.startswith(b"error: node 'nosuch' not found")


def test_expired_profile_says_run_bsh_login(fake: FakeCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(fake.home, home)
    pj = home / "profiles" / CLUSTER / "profile.json"
    data = json.loads(pj.read_text())
    data["expires"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    pj.write_text(json.dumps(data))
    env = {**os.environ, "BSH_HOME": str(home)}
    res = subprocess.run([BSH, "ssh", "node1", "true"], capture_output=True, env=env, timeout=30)
    assert res.returncode == 3 and b"run bsh login" in res.stderr


def test_openssh_through_bsh_config_and_proxy_ssh(fake: FakeCluster, tmp_path: Path) -> None:
    ssh = require_binary("ssh")
    res = bsh(fake, "config")
    assert res.returncode == 0, res.stderr
    config = tmp_path / "ssh_config"
    config.write_bytes(res.stdout)
    text = res.stdout.decode()
    assert f"Host *.{CLUSTER} {CLUSTER}" in text and "StrictHostKeyChecking yes" in text
    env = {**os.environ, "BSH_HOME": str(fake.home), "HOME": str(fake.root)}
    env.pop("SSH_AUTH_SOCK", None)
    base = [ssh, "-F", str(config), "-o", "BatchMode=yes"]
    done = subprocess.run(
        [*base, "alice@node1.test.local", "true"], capture_output=True, env=env, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [*base, "alice@node1.test.local", "exit 5"], capture_output=True, env=env, timeout=TIMEOUT
    )
    assert done.returncode == 5, done.stderr
    data = os.urandom(512 * 1024)
    done = subprocess.run(
        [*base, "alice@node2.test.local", "cat"],
        input=data.hex().encode(),
        capture_output=True,
        env=env,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == data.hex().encode()
    refused = subprocess.run(
        [*base, "alice@evil.test.local", "true"], capture_output=True, env=env, timeout=TIMEOUT
    )
    assert refused.returncode != 0
    assert b"certificate" in refused.stderr.lower() or b"verification" in refused.stderr.lower()
    missing = subprocess.run(
        [*base, "alice@nosuch.test.local", "true"], capture_output=True, env=env, timeout=TIMEOUT
    )
    assert missing.returncode != 0 and b"error: node 'nosuch' not found" in missing.stderr


def test_interactive_shell_with_pty_and_window_changes(fake: FakeCluster) -> None:
    import pexpect

    env = {**os.environ, "BSH_HOME": str(fake.home), "HOME": str(fake.root), "TERM": "vt100"}
    child = pexpect.spawn(BSH, ["ssh", "node1"], env=env, dimensions=(30, 100), timeout=TIMEOUT)
    try:
        child.expect(r"term=vt100 size=100x30")
        child.expect(r"\$ ")
        child.setwinsize(40, 120)  # SIGWINCH to bsh -> window-change to the node
        deadline = time.monotonic() + TIMEOUT
        while True:
            child.send("size\r")
            index = child.expect([r"now=120x40", r"now=\d+x\d+"])
            if index == 0:
                break
            assert time.monotonic() < deadline
        child.send("exit 7\r")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 7


def test_builtin_client_parses_arguments_like_openssh(fake: FakeCluster) -> None:
    """Issue 12 item 5: -l, -o, --, unknown flags, on the built-in (asyncssh) client."""
    res = bsh(fake, "ssh", "-l", "root", "node1", "whoami", client="builtin")
    assert (res.returncode, res.stdout) == (0, b"root\n"), res.stderr
    res = bsh(fake, "ssh", "-o", "User=root", "-o", "ServerAliveInterval=5", "node1", "whoami",
              client="builtin")  # fmt: skip
    assert (res.returncode, res.stdout) == (0, b"root\n"), res.stderr
    res = bsh(fake, "ssh", "-tl", "alice", "--", "node1", "echo", "-l", "x", client="builtin")
    assert res.returncode == 0 and res.stdout.replace(b"\r", b"") == b"ran echo -l x\n"
    res = bsh(fake, "ssh", "-x", "node1", "true", client="builtin")
    assert res.returncode == 2 and b"unknown option -x" in res.stderr, res.stderr
    assert b"-l" not in res.stdout  # never a node called "-l"
    res = bsh(fake, "ssh", "-o", "StrictHostKeyChecking=no", "node1", "true", client="builtin")
    assert res.returncode != 0 and b"not supported" in res.stderr
    assert b"host CA" in res.stderr
    res = bsh(fake, "ssh", "-o", "Ciphers=aes128-ctr", "node1", "true", client="builtin")
    assert res.returncode != 0 and b"not supported by bsh's built-in SSH client" in res.stderr


def test_builtin_client_escape_sequences(fake: FakeCluster) -> None:
    """``~?`` lists the escapes and ``~.`` disconnects (status 255), at the start of a line."""
    import pexpect

    env = {
        **os.environ,
        "BSH_HOME": str(fake.home),
        "HOME": str(fake.root),
        "TERM": "vt100",
        "BSH_SSH_CLIENT": "builtin",
    }
    child = pexpect.spawn(BSH, ["ssh", "node1"], env=env, dimensions=(30, 100), timeout=TIMEOUT)
    try:
        child.expect(r"\$ ")
        child.send("\r")
        child.expect(r"\$ ")
        child.send("~?")
        child.expect("Supported escape sequences")
        child.expect(r"~\.\s+- terminate connection")
        child.send("echo a~.b\r")  # not at the start of a line: sent as typed
        child.expect(r"\$ ")
        child.send("~.")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 255
