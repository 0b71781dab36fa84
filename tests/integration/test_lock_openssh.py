"""Locks against the real OpenSSH client (issue 6, "Tests"): a lock mid-session ends an
interactive ``ssh -tt`` session (the user sees the lock message) and an ``ssh -N -L`` port
forward (the forwarded TCP connection closes, ``ssh`` exits).

``ssh`` goes through ``bsh config`` (``ProxyCommand bsh proxy ssh``) and the proxy to a remote
node (another ``bastion start`` joined with a token), which learns of the lock through its own
watch; the proxy cuts its relay half a second later.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    Cluster,
    Env,
    User,
    free_port,
    start_node,
    stop,
    unique,
    wait_for,
    wait_node,
)

from bastion.testing import missing_peer
from bastion.testing.peers.sshd import SshdUnavailable, find_ssh_binary

pytestmark = pytest.mark.integration

LOGIN = getpass.getuser()
ENDS_WITHIN = 15.0
"""Hang guard, not a measurement: a session the lock failed to cut would live on forever.
How fast the cut is (sub-second) is measured by bench/locks, not asserted here."""
SETUP_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def node(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A remote node joined to this worker's cluster, shared by the module's tests."""
    try:
        find_ssh_binary("ssh")
    except SshdUnavailable as exc:
        missing_peer(str(exc))
    work = tmp_path_factory.mktemp("lock-openssh")
    env = Env(cluster, work)
    token = json.loads(
        env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    )["token"]
    name = unique("lkssh")
    proc = start_node(env, work, name, token)
    try:
        wait_node(env, name)
        yield name
    finally:
        stop(proc)


def _ssh_user(env: Env) -> tuple[User, Path]:
    """A new user logged in through the proxy, and their ``bsh config`` for OpenSSH."""
    user = env.new_user("access", LOGIN, via_proxy=True)
    done = env.bsh(user, "config")
    assert done.returncode == 0, done.stderr
    cfg = user.home / "ssh_config"
    cfg.write_text(done.stdout + "    BatchMode yes\n    ConnectTimeout 30\n")
    return user, cfg


def _dest(env: Env, node: str) -> str:
    return f"{LOGIN}@{node}.{env.cluster.cluster}"


def _lock(env: Env, user: User, message: str) -> str:
    """``bctl lock --user=...``: the lock's name."""
    out = env.admin_ok("lock", f"--user={user.name}", f"--message={message}", "--format", "json")
    name: str = json.loads(out)["metadata"]["name"]
    return name


class EchoServer:
    """A TCP echo server on loopback, in threads (the far end of the forward)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

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
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def _echoes(conn: socket.socket, payload: bytes) -> bool:
    conn.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = conn.recv(65536)
        if not chunk:
            return False
        got += chunk
    return got == payload


def _closed_within(conn: socket.socket, timeout: float) -> bool:
    """True when the peer closes (EOF or reset) before ``timeout``; data is discarded."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        conn.settimeout(left)
        try:
            if not conn.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


def test_lock_ends_interactive_openssh_session(env: Env, node: str) -> None:
    import pexpect

    user, cfg = _ssh_user(env)
    bystander, bystander_cfg = _ssh_user(env)
    spawn_env = {**os.environ, "TERM": "dumb"}
    child = pexpect.spawn(
        "ssh", ["-F", str(cfg), "-tt", _dest(env, node)],
        timeout=SETUP_TIMEOUT, encoding="utf-8", env=spawn_env,
    )  # fmt: skip
    other = pexpect.spawn(
        "ssh", ["-F", str(bystander_cfg), "-tt", _dest(env, node)],
        timeout=SETUP_TIMEOUT, encoding="utf-8", env=spawn_env,
    )  # fmt: skip
    try:
        for shell in (child, other):
            shell.sendline("PS1=READY'> '")  # the echo of this line does not hold the prompt
            shell.expect_exact("READY> ")
        child.sendline("echo $((6*7))")
        child.expect(r"\r\n42\r\n")
        child.expect_exact("READY> ")

        _lock(env, user, "laptop stolen")
        child.expect(pexpect.EOF, timeout=ENDS_WITHIN)
        output = child.before
        assert "bastion: session terminated: locked: laptop stolen" in output, output
        assert "Traceback" not in output
        child.close()
        assert child.exitstatus != 0 or child.signalstatus is not None

        # Another user's shell on the same node is untouched.
        assert other.isalive()
        other.sendline("echo $((7*6))")
        other.expect(r"\r\n42\r\n", timeout=10)
        other.sendline("exit 0")
        other.expect(pexpect.EOF, timeout=10)
    finally:
        child.close(force=True)
        other.close(force=True)


def test_lock_ends_openssh_port_forward(env: Env, node: str) -> None:
    user, cfg = _ssh_user(env)
    echo = EchoServer()
    local = free_port()
    proc = subprocess.Popen(
        ["ssh", "-F", str(cfg), "-N", "-o", "ExitOnForwardFailure=yes",
         "-L", f"127.0.0.1:{local}:127.0.0.1:{echo.port}", _dest(env, node)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    conn: socket.socket | None = None
    try:

        def forwarded() -> socket.socket | None:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                sock = socket.create_connection(("127.0.0.1", local), timeout=10)
            except OSError:
                return None  # ssh is not listening yet
            try:
                if _echoes(sock, b"hello\n"):
                    return sock
            except OSError:
                pass
            sock.close()
            return None

        conn = wait_for(forwarded, "the forward to work", timeout=SETUP_TIMEOUT)
        assert conn is not None
        payload = secrets.token_bytes(50_000)
        assert _echoes(conn, payload)  # the open connection carries data before the lock

        _lock(env, user, "contractor left")
        assert _closed_within(conn, ENDS_WITHIN), "the forwarded connection stayed open"
        try:
            proc.wait(timeout=ENDS_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ssh -N still running {ENDS_WITHIN} s after the lock")
        _, err = proc.communicate(timeout=10)
        assert proc.returncode != 0
        assert "Traceback" not in err, err
        with pytest.raises(OSError):  # nothing listens on the forward's port any more
            socket.create_connection(("127.0.0.1", local), timeout=2).close()
    finally:
        if conn is not None:
            conn.close()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
        echo.close()
