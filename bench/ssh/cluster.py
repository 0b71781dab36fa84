"""The Bastion side of the SSH benchmark: one ``bastion start`` daemon (auth + proxy + built-in
node), a logged-in user, and agentless sshd nodes registered behind the proxy.

Everything here drives the real CLIs as subprocesses, exactly as an operator would; nothing is
imported from the daemon. Every process started is remembered and stopped by PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.testing.peers.ports import free_port
from bastion.testing.peers.sshd import SshdServer, generate_key, local_login, start_sshd

BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0
CMD_TIMEOUT = 120.0
PASSWORD = "bench password, not secret"


def _ping(addr: str) -> dict[str, Any]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(f"https://{addr}/v1/ping", context=ctx, timeout=2) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


@dataclass
class BastionCluster:
    """A running daemon plus one user profile (``home``) that may log in as ``login``."""

    work: Path
    name: str
    auth_addr: str
    proxy_addr: str
    node_name: str
    proc: subprocess.Popen[bytes]
    log: Path
    pin: str = ""
    home: Path = field(init=False)
    login: str = field(default_factory=local_login)
    sshds: list[SshdServer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home = self.work / "bsh-home"
        self.home.mkdir(parents=True, exist_ok=True)

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def env(self) -> dict[str, str]:
        return {**os.environ, "BSH_HOME": str(self.home), "NO_COLOR": "1"}

    def run(
        self, tool: str, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN / tool), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.work,
            timeout=CMD_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def admin(self, *args: str, input: str | None = None) -> str:
        return self.run("bctl", "--data-dir", str(self.data_dir), *args, input=input).stdout

    def stop(self) -> None:
        for sshd in self.sshds:
            sshd.stop()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    # -- set-up steps -----------------------------------------------------------------------

    def create_user(self) -> None:
        """An ``access`` user with ``login`` among its logins, logged in through the proxy."""
        user = "bench"
        invite = json.loads(
            self.admin(
                "users", "add", user, "--roles=access,editor", f"--logins={self.login}",
                "--format", "json",
            )
        )  # fmt: skip
        proc = subprocess.Popen(
            [str(BIN / "bsh"), "login", f"--proxy={self.proxy_addr}", f"--invite={invite['token']}"]
            + [f"--ca-pin={self.pin}", "--password-stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
            cwd=self.work,
        )
        assert proc.stdin and proc.stderr
        proc.stdin.write(PASSWORD + "\n")
        proc.stdin.flush()
        code = ""
        for line in proc.stderr:  # second_factor is off: no TOTP secret is printed
            match = re.search(r"secret: ([A-Z2-7]+)", line)
            if match:
                import pyotp

                code = pyotp.TOTP(match.group(1)).now()
                break
        out, err = proc.communicate(code + "\n", timeout=CMD_TIMEOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"bsh login failed: {err.strip()}")

    def add_agentless(self, name: str, labels: dict[str, str], extra: dict[str, str]) -> SshdServer:
        """Start a stock sshd that trusts the user CA, holds a host certificate from the host
        CA, and register it as an agentless node (the recipe of docs/ssh.md)."""
        root = self.work / f"sshd-{name}"
        root.mkdir(parents=True, exist_ok=True)
        host_key = root / "ssh_host_ed25519_key"
        generate_key(host_key, f"{name}-host")
        self.admin(
            "auth", "sign", f"--host={name}", f"--public-key={host_key}.pub",
            f"--out={root / name}",
        )  # fmt: skip
        sshd = start_sshd(
            root,
            trusted_user_ca=self.admin("auth", "export", "--type=user"),
            host_key=host_key,
            host_cert=(root / f"{name}-cert.pub").read_text(),
            extra=extra,
        )
        self.sshds.append(sshd)
        node = {
            "kind": "node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"addr": sshd.addr, "agentless": True, "hostname": name},
        }
        self.admin("create", "-f", "-", input=json.dumps(node))
        return sshd

    def ssh_config(self) -> Path:
        """``bsh config`` written to a file for ``ssh -F``."""
        path = self.work / "bsh_ssh_config"
        path.write_text(self.run("bsh", "config").stdout + "    BatchMode yes\n")
        return path

    def wait_for_node(self, name: str, timeout: float = 30.0) -> None:
        """Until ``bsh ls`` lists ``name`` (the built-in node heartbeats after start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.run("bsh", "ls", "--format", "json", check=False)
            if done.returncode == 0 and any(
                n.get("metadata", {}).get("name") == name for n in json.loads(done.stdout or "[]")
            ):
                return
            time.sleep(0.2)
        raise RuntimeError(f"node {name} did not appear in bsh ls within {timeout}s")


def start_cluster(work: Path, name: str = "bench.local", extra_config: str = "") -> BastionCluster:
    """``bastion start`` with auth, proxy and the built-in node; second factor off (a bench)."""
    work.mkdir(parents=True, exist_ok=True)
    auth_port, proxy_port = free_port(), free_port()
    config = work / "bastion.yaml"
    config.write_text(
        "version: v1\n"
        "auth_service:\n  second_factor: 'off'\n"
        "  rate_limit: {average: 100, burst: 1000}\n"
        "proxy_service:\n  max_unauthenticated_per_ip: 1024\n"
        "log: {level: warning}\n" + extra_config
    )
    node_name = "builtin"
    log = work / "daemon.log"
    args = [
        str(BIN / "bastion"), "start", "-c", str(config), "--data-dir", str(work / "data"),
        "--auth-addr", f"127.0.0.1:{auth_port}", "--proxy-addr", f"127.0.0.1:{proxy_port}",
        "--cluster-name", name, "--node-name", node_name,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=work)
    cluster = BastionCluster(
        work, name, f"127.0.0.1:{auth_port}", f"127.0.0.1:{proxy_port}", node_name, proc, log
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bastion exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        text = log.read_text(errors="replace")
        match = re.search(r"CA pin:\s+(sha256:[0-9a-f]+)", text)
        if match and (cluster.data_dir / "admin" / "profile.json").exists():
            try:
                _ping(cluster.proxy_addr)
            except OSError:
                time.sleep(0.1)
                continue
            cluster.pin = match.group(1)
            return cluster
        time.sleep(0.1)
    cluster.stop()
    raise RuntimeError(f"bastion did not become ready:\n{log.read_text()[-3000:]}")
