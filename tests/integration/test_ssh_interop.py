"""SSH access end to end with real processes only (issue 4, "Tests").

One ``bastion start`` daemon per module (auth + proxy on one port + the built-in SSH node
``builtin`` behind its reverse tunnel), real OpenSSH ``ssh``/``scp`` through ``bsh config``
(``ProxyCommand bsh proxy ssh``), ``bsh`` and ``bbot`` as subprocesses, and stock ``sshd``
processes as agentless nodes (:mod:`bastion.testing.peers.sshd`). Every refusal is checked
twice: the user sees a clear error (no traceback), and ``bctl audit search`` holds who, what, why
and from where.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import BIN, Cluster, Env, User, free_port, start_cluster, unique

from bastion.testing import missing_peer
from bastion.testing.peers.sshd import (
    SshdServer,
    SshdUnavailable,
    find_ssh_binary,
    find_sshd,
    generate_key,
    local_login,
    start_sshd,
)

pytestmark = pytest.mark.integration

CLUSTER = "ssh.test"
BUILTIN = "builtin"
NODE_KINDS = [BUILTIN, "agentless"]
SSH_TIMEOUT = 90
LOGIN = local_login()


def _require_openssh() -> None:
    try:
        find_sshd()
        for tool in ("ssh", "scp", "ssh-keygen"):
            find_ssh_binary(tool)
    except SshdUnavailable as exc:
        missing_peer(str(exc))


# ---- the module's cluster ----------------------------------------------------------------------


@dataclass
class SshCluster:
    env: Env
    work: Path
    proxy_addr: str
    auth_addr: str
    alice: User
    alice_cfg: Path
    eve: User
    """Logged in with --ttl=1m at module start: her certificate is expired by the end."""
    sshds: dict[str, SshdServer] = field(default_factory=dict)
    foreign_ca: Path | None = None

    def ssh(
        self,
        cfg: Path,
        dest: str,
        *cmd: str,
        timeout: float = SSH_TIMEOUT,
        opts: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-F", str(cfg), *opts, dest, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def config_for(self, user: User) -> Path:
        done = self.env.bsh(user, "config")
        assert done.returncode == 0, done.stderr
        path = user.home / "ssh_config"
        path.write_text(done.stdout + "    BatchMode yes\n    ConnectTimeout 30\n")
        return path

    def login_via_proxy(self, user: User, *extra: str) -> None:
        from harness import fresh_totp

        done = self.env.bsh(
            user,
            "login",
            f"--proxy={self.proxy_addr}",
            f"--user={user.name}",
            "--password-stdin",
            *extra,
            input=f"{user.password}\n{fresh_totp(user)}\n",
        )
        assert done.returncode == 0, done.stderr

    def new_user(self, roles: str, logins: str, *extra: str) -> User:
        user = self.env.new_user(roles, logins)  # accepts the invite through the proxy
        if extra:
            self.login_via_proxy(user, *extra)
        return user

    def add_agentless(
        self, name: str, labels: dict[str, str], host_ca: str = "cluster"
    ) -> SshdServer:
        """A stock sshd trusting the cluster user CA, with a host certificate from the cluster
        host CA (or from a foreign CA: ``host_ca="foreign"``), registered as a node."""
        root = self.work / f"node-{name}"
        root.mkdir(parents=True)
        host_key = root / "host_key"
        generate_key(host_key, name)
        if host_ca == "cluster":
            self.env.admin_ok(
                "auth", "sign", f"--host={name}", f"--public-key={host_key}.pub",
                f"--out={root / name}",
            )  # fmt: skip
            cert = (root / f"{name}-cert.pub").read_text()
        else:
            cert = sign_with_foreign_ca(self.foreign_ca_path(), host_key, name, host=True)
        sshd = start_sshd(
            root,
            trusted_user_ca=self.env.admin_ok("auth", "export", "--type=user"),
            host_key=host_key,
            host_cert=cert,
        )
        self.sshds[name] = sshd
        node = {
            "kind": "node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"addr": sshd.addr, "agentless": True, "hostname": name},
        }
        self.env.admin_ok("create", "-f", "-", input=json.dumps(node))
        return sshd

    def foreign_ca_path(self) -> Path:
        if self.foreign_ca is None:
            self.foreign_ca = self.work / "foreign_ca"
            generate_key(self.foreign_ca, "foreign-ca")
        return self.foreign_ca


def sign_with_foreign_ca(ca: Path, key: Path, principal: str, host: bool = False) -> str:
    """An OpenSSH certificate for ``key.pub`` signed by a CA the cluster never heard of."""
    pub = Path(f"{key}.pub")
    work = ca.parent / f"foreign-{unique()}"
    work.mkdir()
    target = work / "key.pub"
    shutil.copy(pub, target)
    args = ["ssh-keygen", "-q", "-s", str(ca), "-I", f"foreign-{principal}", "-n", principal]
    done = subprocess.run(
        [*args, *(["-h"] if host else []), "-V", "-5m:+1h", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return (work / "key-cert.pub").read_text()


@pytest.fixture(scope="module")
def ssh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshCluster]:
    _require_openssh()
    work = tmp_path_factory.mktemp("ssh-cluster")
    proxy_addr = f"127.0.0.1:{free_port()}"
    config = work / "bastion.yaml"
    config.write_text(
        "version: v1\n"
        "auth_service:\n  rate_limit: {average: 50, burst: 200}\n"
        "proxy_service:\n  handshake_timeout: 2s\n  max_unauthenticated_per_ip: 16\n"
    )
    cluster: Cluster = start_cluster(
        work, "-c", str(config), "--proxy-addr", proxy_addr, "--node-name", BUILTIN, name=CLUSTER
    )
    auth_addr = cluster.addr
    cluster.addr = proxy_addr  # every bsh login and invite goes through the proxy's one port
    cluster.proxy = proxy_addr  # our --proxy-addr comes last on the command line: it wins
    env = Env(cluster, work / "homes")
    sshds: dict[str, SshdServer] = {}
    try:
        eve = env.new_user("access", LOGIN)
        ctx = SshCluster(env, work, proxy_addr, auth_addr, eve, Path(), eve, sshds)  # alice next
        ctx.login_via_proxy(eve, "--ttl=1m")
        ctx.alice = env.new_user("access", LOGIN)
        ctx.alice_cfg = ctx.config_for(ctx.alice)
        ctx.add_agentless("agentless", {"env": "agentless"})
        _wait_listed(ctx, ctx.alice, [BUILTIN, "agentless"])
        yield ctx
    finally:
        for sshd in sshds.values():
            sshd.stop()
        cluster.stop()


def _wait_listed(ctx: SshCluster, user: User, names: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    listed: set[str] = set()
    while time.monotonic() < deadline:
        done = ctx.env.bsh(user, "ls", "--format", "json")
        if done.returncode == 0:
            listed = {n["metadata"]["name"] for n in json.loads(done.stdout)}
            if set(names) <= listed:
                return
        time.sleep(0.2)
    pytest.fail(f"nodes {names} not listed within {timeout}s (listed: {sorted(listed)})")


def _dest(node: str) -> str:
    return f"{LOGIN}@{node}.{CLUSTER}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def wait_event(
    env: Env, since: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> dict[str, Any]:
    """The first audit event since ``since`` that satisfies ``pred`` (agents ship events
    asynchronously, so poll)."""
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        events = env.events("--since", since)
        for event in events:
            if pred(event):
                return event
        time.sleep(0.3)
    dump = json.dumps(events[-10:], indent=1)[-3000:]
    pytest.fail(f"no matching audit event since {since}; recent events:\n{dump}")


def refusal(**expected: str) -> Callable[[dict[str, Any]], bool]:
    """A failed event whose fields contain the expected substrings (``text=`` searches the
    whole event), with a reason and a remote address: who, what, why, from where."""

    def pred(event: dict[str, Any]) -> bool:
        if event.get("outcome") != "failure" or not event.get("reason"):
            return False
        if not event.get("remote_addr"):
            return False
        whole = json.dumps(event)
        for key, value in expected.items():
            hay = whole if key == "text" else str(event.get(key, ""))
            if value not in hay:
                return False
        return True

    return pred


def assert_clean_error(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr


# ---- what works --------------------------------------------------------------------------------


@pytest.mark.parametrize("node", NODE_KINDS)
def test_interactive_shell_through_pty(ssh_cluster: SshCluster, node: str) -> None:
    import pexpect

    child = pexpect.spawn(
        "ssh",
        ["-F", str(ssh_cluster.alice_cfg), "-tt", _dest(node)],
        timeout=SSH_TIMEOUT,
        encoding="utf-8",
        env={**os.environ, "TERM": "dumb"},
    )
    try:
        child.sendline("PS1=READY'> '")  # the echo of this line does not contain the prompt
        child.expect_exact("READY> ")
        child.sendline("echo $((6*7))")
        child.expect(r"\r\n42\r\n")
        child.expect_exact("READY> ")
        child.sendline("exit 0")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize("node", NODE_KINDS)
def test_exec_exit_codes(ssh_cluster: SshCluster, node: str) -> None:
    cfg = ssh_cluster.alice_cfg
    done = ssh_cluster.ssh(cfg, _dest(node), "echo out; echo err >&2; exit 7")
    assert done.returncode == 7, done.stderr
    assert done.stdout == "out\n"
    assert "err" in done.stderr
    assert ssh_cluster.ssh(cfg, _dest(node), "true").returncode == 0


@pytest.mark.parametrize("node", NODE_KINDS)
def test_scp_50mb_both_directions(ssh_cluster: SshCluster, node: str, tmp_path: Path) -> None:
    cfg = str(ssh_cluster.alice_cfg)
    src = tmp_path / "up.bin"
    data = os.urandom(50 * 2**20)
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    remote = f"/tmp/bastion-scp-{unique()}"
    back = tmp_path / "down.bin"
    try:
        up = subprocess.run(
            ["scp", "-F", cfg, "-q", str(src), f"{_dest(node)}:{remote}"],
            capture_output=True, text=True, timeout=SSH_TIMEOUT * 2, check=False,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        check = ssh_cluster.ssh(ssh_cluster.alice_cfg, _dest(node), f"sha256sum {remote}")
        assert check.stdout.split()[0] == digest
        down = subprocess.run(
            ["scp", "-F", cfg, "-q", f"{_dest(node)}:{remote}", str(back)],
            capture_output=True, text=True, timeout=SSH_TIMEOUT * 2, check=False,
        )  # fmt: skip
        assert down.returncode == 0, down.stderr
        assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    finally:
        ssh_cluster.ssh(ssh_cluster.alice_cfg, _dest(node), f"rm -f {remote}")


class EchoServer:
    """A TCP echo server on loopback, in a thread (the far end of port forwards)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("node", NODE_KINDS)
def test_local_port_forwarding(ssh_cluster: SshCluster, node: str) -> None:
    echo = EchoServer()
    local = free_port()
    proc = subprocess.Popen(
        ["ssh", "-F", str(ssh_cluster.alice_cfg), "-N", "-o", "ExitOnForwardFailure=yes",
         "-L", f"127.0.0.1:{local}:127.0.0.1:{echo.port}", _dest(node)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        payload = secrets.token_bytes(100_000)
        deadline = time.monotonic() + SSH_TIMEOUT
        got = b""
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with socket.create_connection(("127.0.0.1", local), timeout=10) as conn:
                    conn.sendall(payload)
                    conn.shutdown(socket.SHUT_WR)
                    got = b"".join(iter(lambda c=conn: c.recv(65536), b""))  # type: ignore[misc]
                if got:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert got == payload
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        echo.close()


def test_bsh_ssh_to_many_nodes_by_label(ssh_cluster: SshCluster) -> None:
    env_label = unique("staging")
    names = [unique("stg") for _ in range(3)]
    for name in names:
        ssh_cluster.add_agentless(name, {"env": env_label})
    ssh_cluster.add_agentless(unique("other"), {"env": unique("prod")})
    _wait_listed(ssh_cluster, ssh_cluster.alice, names)
    done = ssh_cluster.env.bsh(
        ssh_cluster.alice, "ssh", f"{LOGIN}@env={env_label}", "echo", "hello; echo two"
    )
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stdout.splitlines())
    assert lines == sorted([f"[{n}] hello" for n in names] + [f"[{n}] two" for n in names])


# ---- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("node", NODE_KINDS)
def test_login_not_among_principals(ssh_cluster: SshCluster, node: str) -> None:
    since = _now()
    done = ssh_cluster.ssh(ssh_cluster.alice_cfg, f"nobody@{node}.{CLUSTER}", "true")
    assert_clean_error(done)
    assert done.returncode == 255
    assert "nobody" in done.stderr
    wait_event(ssh_cluster.env, since, refusal(user=ssh_cluster.alice.name, text="nobody"))


def test_role_denying_node_labels(ssh_cluster: SshCluster) -> None:
    env = ssh_cluster.env
    label, role, node = unique("forbidden"), unique("deny"), unique("fbd")
    env.admin_ok(
        "create", "-f", "-",
        input=json.dumps({"kind": "role", "version": "v1", "metadata": {"name": role},
                          "spec": {"deny": {"node_labels": {"env": [label]}}}}),
    )  # fmt: skip
    ssh_cluster.add_agentless(node, {"env": label})
    _wait_listed(ssh_cluster, ssh_cluster.alice, [node])  # alice may: the refusal is the role's
    assert ssh_cluster.ssh(ssh_cluster.alice_cfg, _dest(node), "true").returncode == 0
    bob = ssh_cluster.new_user(f"access,{role}", LOGIN)
    listed = env.bsh(bob, "ls", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert node not in {n["metadata"]["name"] for n in json.loads(listed.stdout)}
    since = _now()
    done = ssh_cluster.ssh(ssh_cluster.config_for(bob), _dest(node), "true")
    assert_clean_error(done)
    assert done.returncode == 255
    wait_event(env, since, refusal(user=bob.name, text=node))
    via_bsh = env.bsh(bob, "ssh", _dest(node).split(".")[0], "true")
    assert_clean_error(via_bsh)


def _cfg_with_identity(ctx: SshCluster, key: Path, cert: Path) -> Path:
    """alice's bsh config, with another key/certificate for the SSH layer (the proxy still
    sees alice's valid TLS certificate: the node itself must refuse)."""
    profile = Path(ctx.alice_cfg.read_text().split("IdentityFile ")[1].split("\n")[0].strip('"'))
    text = ctx.alice_cfg.read_text()
    text = text.replace(str(profile), str(key))
    text = text.replace(str(profile.parent / "key-cert.pub"), str(cert))
    path = cert.parent / f"cfg-{unique()}"
    path.write_text(text)
    return path


@pytest.mark.parametrize("node", NODE_KINDS)
def test_user_certificate_from_foreign_ca(ssh_cluster: SshCluster, node: str) -> None:
    work = ssh_cluster.work / unique("foreign")
    work.mkdir()
    key = work / "key"
    generate_key(key)
    cert = work / "key-cert.pub"
    cert.write_text(sign_with_foreign_ca(ssh_cluster.foreign_ca_path(), key, LOGIN))
    since = _now()
    done = ssh_cluster.ssh(_cfg_with_identity(ssh_cluster, key, cert), _dest(node), "echo in")
    assert_clean_error(done)
    assert done.returncode == 255
    assert "in" not in done.stdout
    assert "Permission denied" in done.stderr
    if node == BUILTIN:  # our node audits it; a stock sshd logs it
        wait_event(ssh_cluster.env, since, refusal(text=BUILTIN))
    else:
        log = ssh_cluster.sshds[node].output()
        assert "Failed publickey" in log and f"ID foreign-{LOGIN}" in log, log[-2000:]


def test_node_host_certificate_from_foreign_ca(ssh_cluster: SshCluster) -> None:
    node = unique("mitm")
    sshd = ssh_cluster.add_agentless(node, {"env": "mitm"}, host_ca="foreign")
    _wait_listed(ssh_cluster, ssh_cluster.alice, [node])
    done = ssh_cluster.ssh(ssh_cluster.alice_cfg, _dest(node), "echo reached")
    assert_clean_error(done)
    assert "reached" not in done.stdout
    assert "Host key verification failed" in done.stderr, done.stderr
    via_bsh = ssh_cluster.env.bsh(ssh_cluster.alice, "ssh", f"{LOGIN}@{node}", "echo reached")
    assert_clean_error(via_bsh)
    assert "reached" not in via_bsh.stdout
    # bsh ssh hands plain sessions to OpenSSH (its own refusal) or refuses itself ("error:").
    assert "error:" in via_bsh.stderr or "Host key verification failed" in via_bsh.stderr
    assert "Accepted" not in sshd.output()  # nothing was authenticated to the impostor


def _proxy_host_port(ctx: SshCluster) -> tuple[str, int]:
    host, port = ctx.proxy_addr.rsplit(":", 1)
    return host, int(port)


def _closed_within(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def _connect_from(source: str, addr: tuple[str, int]) -> socket.socket:
    """A TCP connection from another loopback address (Linux routes all of 127/8 to lo), so
    the attacker is a different source IP than the real user at 127.0.0.1."""
    return socket.create_connection(addr, timeout=5, source_address=(source, 0))


def test_garbage_and_slowloris_do_not_stall_logins(ssh_cluster: SshCluster) -> None:
    addr = _proxy_host_port(ssh_cluster)
    slow = []
    garbage = _connect_from("127.0.0.3", addr)
    try:
        for _ in range(20):  # more than max_unauthenticated_per_ip (16)
            sock = _connect_from("127.0.0.2", addr)
            sock.sendall(b"\x16\x03\x01")  # the first bytes of a TLS record, then nothing
            slow.append(sock)
        garbage.sendall(secrets.token_bytes(4096))
        assert _closed_within(garbage, 5), "garbage connection left open"
        # While the junk connections are held, a real user still gets in at once.
        listed = ssh_cluster.env.bsh(ssh_cluster.alice, "ls")
        assert listed.returncode == 0, listed.stderr
        done = ssh_cluster.ssh(ssh_cluster.alice_cfg, _dest(BUILTIN), "echo alive")
        assert done.returncode == 0 and done.stdout == "alive\n", done.stderr
        for sock in slow:  # handshake_timeout is 2s in this module
            assert _closed_within(sock, 6), "slowloris connection outlived the deadline"
    finally:
        garbage.close()
        for sock in slow:
            sock.close()


def _unknown_alpn(source: str, addr: tuple[str, int]) -> bool:
    """Offer only an unknown ALPN; True when the proxy refused (handshake failed or closed)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["evil-protocol/9"])
    with _connect_from(source, addr) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="proxy") as tls:
                if tls.selected_alpn_protocol() == "evil-protocol/9":
                    return False
                tls.sendall(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
                return _closed_within(tls, 5)
        except (ssl.SSLError, ConnectionResetError):
            return True  # refused during the handshake


def test_unknown_alpn_refused(ssh_cluster: SshCluster) -> None:
    assert _unknown_alpn("127.0.0.4", _proxy_host_port(ssh_cluster))


# Refusals before TLS completes are audited too (rate-limited per source IP).
@pytest.mark.parametrize("junk", ["garbage", "unknown-alpn"])
def test_pre_tls_refusals_are_audited(ssh_cluster: SshCluster, junk: str) -> None:
    addr, since = _proxy_host_port(ssh_cluster), _now()
    source = "127.0.0.5" if junk == "garbage" else "127.0.0.6"
    if junk == "garbage":
        with _connect_from(source, addr) as sock:
            sock.sendall(secrets.token_bytes(4096))
            assert _closed_within(sock, 5)
    else:
        assert _unknown_alpn(source, addr)
    wait_event(ssh_cluster.env, since, refusal(remote_addr=source), timeout=5)


def _bbot_join(ctx: SshCluster, token: str, name: str) -> subprocess.CompletedProcess[str]:
    dest = ctx.work / unique("bot")
    return subprocess.run(
        [str(BIN / "bbot"), "join", f"--auth={ctx.proxy_addr}", f"--token={token}",
         f"--ca-pin={ctx.env.cluster.pin}", f"--name={name}", f"--dest={dest}", "--role=node"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _node_token(ctx: SshCluster) -> str:
    token = json.loads(ctx.env.admin_ok("tokens", "add", "--type=node", "--format", "json"))
    return str(token["token"])


def test_forged_join_token(ssh_cluster: SshCluster) -> None:
    name, since = unique("forged"), _now()
    done = _bbot_join(ssh_cluster, secrets.token_hex(16), name)
    assert_clean_error(done)
    assert "token" in done.stderr
    wait_event(ssh_cluster.env, since, refusal(target=name))


def test_stolen_join_token_used_twice(ssh_cluster: SshCluster) -> None:
    token = _node_token(ssh_cluster)
    first = _bbot_join(ssh_cluster, token, unique("n"))
    assert first.returncode == 0, first.stderr
    thief, since = unique("thief"), _now()
    second = _bbot_join(ssh_cluster, token, thief)
    assert_clean_error(second)
    assert "already used" in second.stderr or "invalid" in second.stderr
    wait_event(ssh_cluster.env, since, refusal(target=thief))


def test_node_claiming_another_nodes_name(ssh_cluster: SshCluster) -> None:
    since = _now()
    done = _bbot_join(ssh_cluster, _node_token(ssh_cluster), BUILTIN)
    assert_clean_error(done)
    assert "already in use" in done.stderr
    wait_event(ssh_cluster.env, since, refusal(target=BUILTIN))


# Last in the module: eve's 1-minute certificate (issued at module start) has expired by now.
@pytest.mark.parametrize("node", NODE_KINDS)
def test_expired_certificate(ssh_cluster: SshCluster, node: str) -> None:
    profile_dir = Path(
        ssh_cluster.config_for(ssh_cluster.eve).read_text().split("IdentityFile ")[1].split("\n")[0]
    ).parent
    cert = profile_dir / "key-cert.pub"
    info = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True)
    valid_to = info.stdout.split("Valid:")[1].split(" to ")[1].split()[0]
    expires = datetime.fromisoformat(valid_to)  # local time, as ssh-keygen prints it
    wait = (expires - datetime.now()).total_seconds() + 2
    assert wait < 90, f"eve's certificate is not short-lived: {info.stdout}"
    if wait > 0:
        time.sleep(wait)
    since = _now()
    done = ssh_cluster.ssh(_cfg_with_identity(ssh_cluster, profile_dir / "key", cert),
                           _dest(node), "echo in")  # fmt: skip
    assert_clean_error(done)
    assert "in" not in done.stdout
    assert "Permission denied" in done.stderr
    if node == BUILTIN:
        wait_event(ssh_cluster.env, since, refusal(text="expire"))
    else:
        assert "expired" in ssh_cluster.sshds[node].output().lower()
    # bsh itself refuses to use the expired profile and says what to do.
    via_bsh = ssh_cluster.env.bsh(ssh_cluster.eve, "ssh", f"{LOGIN}@{node}", "true")
    assert_clean_error(via_bsh)
    assert "bsh login" in via_bsh.stderr
