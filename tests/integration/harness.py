"""Integration harness: the real ``bastion`` daemon as a subprocess, and the CLIs as
subprocesses.

One cluster per xdist worker (session scope); tests use unique user and resource names so they
never interfere. Helpers here never sleep where they can poll.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest

from bastion.testing.peers.ports import free_port

BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0  # a hang guard: a loaded 2-core machine can take 30 s to start one
CMD_TIMEOUT = 60.0
PASSWORD = "correct horse battery staple"


def unverified_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Cluster:
    data_dir: Path
    addr: str
    proc: subprocess.Popen[bytes]
    log: Path
    pin: str = ""
    cluster: str = ""
    proxy: str = ""
    """``host:port`` of the proxy (web/API, SSH, tunnels)."""

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def ping(addr: str, timeout: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(  # noqa: S310 - https to our own test daemon
        f"https://{addr}/v1/ping", context=unverified_context(), timeout=timeout
    ) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def start_cluster(work: Path, *extra: str, name: str = "test.local") -> Cluster:
    """Start ``bastion start`` and wait until the admin identity exists and /v1/ping answers."""
    data_dir = work / "data"
    port = free_port()
    proxy_port = free_port()
    log = work / "daemon.log"
    args = [
        str(BIN / "bastion"),
        "start",
        "--data-dir",
        str(data_dir),
        "--auth-addr",
        f"127.0.0.1:{port}",
        "--proxy-addr",
        f"127.0.0.1:{proxy_port}",
        "--cluster-name",
        name,
        *extra,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=work)
    cluster = Cluster(
        data_dir=data_dir,
        addr=f"127.0.0.1:{port}",
        proc=proc,
        log=log,
        proxy=f"127.0.0.1:{proxy_port}",
    )
    deadline = time.monotonic() + START_TIMEOUT
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"bastion exited with {proc.returncode}:\n{cluster.output()}")
        if (data_dir / "admin" / "profile.json").exists():
            try:
                info = ping(cluster.addr)
                cluster.cluster = info["cluster"]
                match = re.search(r"CA pin:\s+(sha256:[0-9a-f]+)", cluster.output())
                if match:
                    cluster.pin = match.group(1)
                    return cluster
            except OSError as exc:
                last_error = str(exc)
        time.sleep(0.05)
    cluster.stop()
    pytest.fail(
        f"bastion did not become ready in {START_TIMEOUT}s ({last_error}):\n{cluster.output()}"
    )


def run(
    tool: str,
    *args: str,
    home: Path,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a console script of the venv; never raises on a non-zero exit."""
    full_env = {**os.environ, "BSH_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    full_env.pop("VISUAL", None)
    full_env.update(env or {})
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(BIN / tool), *args],
        input=input,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or home,
        timeout=CMD_TIMEOUT,
        check=False,
    )


def totp(secret: str, steps_ahead: int = 0) -> str:
    """The code for ``steps_ahead`` 30-second steps from now (the server accepts +-1 step and
    refuses a step it has already seen, so the next login after an invite uses ``1``)."""
    return str(pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead))


def fresh_totp(user: User) -> str:
    """A code for a step the server has not accepted from ``user`` yet (it accepts one step of
    skew and refuses any step at or before the last one it accepted), waiting when that step
    is still ahead. Remembers the step, so logins in a row never replay one."""
    now = time.time()
    # The server accepts its previous, current and next step when the code arrives. A code for
    # the previous step dies at the end of this window: only with 15 s to spare (a loaded
    # machine takes seconds to start bsh and reach auth), else start at the current step.
    earliest = int(now) // 30 - (1 if 30 - now % 30 >= 15 else 0)
    step = max(user.last_step + 1, earliest)
    while step > int(time.time()) // 30 + 1:
        time.sleep(0.5)
    user.last_step = step
    return str(pyotp.TOTP(user.secret).at(step * 30))


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass
class User:
    name: str
    home: Path
    secret: str = ""
    password: str = PASSWORD
    logins: list[str] = field(default_factory=list)
    last_step: int = 0
    """The last TOTP step the server accepted from this user (see :func:`fresh_totp`)."""


@dataclass
class Env:
    """A cluster plus helpers; each test gets its own BSH_HOME root."""

    cluster: Cluster
    root: Path

    def admin(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(
            "bctl",
            "--data-dir",
            str(self.cluster.data_dir),
            *args,
            home=self.root / "admin-home",
            input=input,
            env=env,
        )

    def admin_ok(self, *args: str, input: str | None = None) -> str:
        result = self.admin(*args, input=input)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def bctl(
        self, user: User, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run("bctl", *args, home=user.home, env=env)

    def bsh(
        self, user: User | Path, *args: str, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        home = user.home if isinstance(user, User) else user
        return run("bsh", *args, home=home, input=input)

    def add_user(self, roles: str, logins: str = "") -> tuple[User, dict[str, Any]]:
        name = unique()
        invite = json.loads(
            self.admin_ok(
                "users", "add", name, f"--roles={roles}", f"--logins={logins}", "--format", "json"
            )
        )
        return User(name=name, home=self.root / name, logins=logins.split(",")), invite

    def accept_invite(
        self, user: User, token: str, otp_ok: bool = True, via_proxy: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``bsh login --invite --password-stdin``: the password first, then (after bsh printed
        the TOTP secret) the code on the next line. ``via_proxy``: through the proxy (as the
        invite's own hint does), so that ``bsh ssh`` reaches remote nodes without a second
        login (:func:`login_via_proxy`)."""
        user.home.mkdir(parents=True, exist_ok=True)
        user.secret = ""
        env = {**os.environ, "BSH_HOME": str(user.home), "NO_COLOR": "1"}
        proc = subprocess.Popen(
            [
                str(BIN / "bsh"),
                "login",
                f"--proxy={self.cluster.proxy if via_proxy else self.cluster.addr}",
                f"--invite={token}",
                f"--ca-pin={self.cluster.pin}",
                "--password-stdin",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=user.home,
        )
        assert proc.stdin and proc.stderr and proc.stdout
        proc.stdin.write(user.password + "\n")
        proc.stdin.flush()
        err_lines = []
        for line in proc.stderr:
            err_lines.append(line)
            match = re.search(r"secret: ([A-Z2-7]+)", line)
            if match:
                user.secret = match.group(1)
                break
        code = (fresh_totp(user) if otp_ok else "000000") if user.secret else ""
        try:
            out, err = proc.communicate(code + "\n" if code else "", timeout=CMD_TIMEOUT)
        except BrokenPipeError:  # bsh failed before reading the code
            out, err = proc.communicate(timeout=CMD_TIMEOUT)
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, out, "".join(err_lines) + err
        )

    def new_user(self, roles: str, logins: str = "", via_proxy: bool = False) -> User:
        user, invite = self.add_user(roles, logins)
        result = self.accept_invite(user, invite["token"], via_proxy=via_proxy)
        assert result.returncode == 0, result.stderr
        return user

    def login(
        self, user: User, password: str | None = None, code: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        code = fresh_totp(user) if code is None else code
        return self.bsh(
            user,
            "login",
            f"--proxy={self.cluster.addr}",
            f"--user={user.name}",
            "--password-stdin",
            input=f"{password or user.password}\n{code}\n",
        )

    def events(self, *args: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(
            self.admin_ok("audit", "search", "--format", "json", *args)
        )
        return events


# ---- remote nodes (another bastion process joining with a token) ---------------------------


def start_proxy(env: Env, tmp: Path, port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """``bastion start`` with only the proxy role (a proxy in its own process), joined to
    ``env``'s cluster with a proxy token; returns it once it listens, with its address."""
    token = json.loads(env.admin_ok("tokens", "add", "--type=proxy", "--format", "json"))
    addr = f"127.0.0.1:{port or free_port()}"
    config = tmp / "proxy.yaml"
    config.write_text(
        f"data_dir: {tmp / 'proxy-data'}\n"
        "auth_service: {enabled: false}\n"
        "ssh_service: {enabled: false}\n"
        "proxy_service:\n"
        f"  listen_addr: {addr}\n"
        f"  auth_server: {env.cluster.addr}\n"
        f"  join_token: {token['token']}\n"
        f"  ca_pin: {env.cluster.pin}\n"
    )
    log = tmp / "proxy.log"
    proc = subprocess.Popen(
        [str(BIN / "bastion"), "start", "-c", str(config)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )

    def listening() -> bool:
        assert proc.poll() is None, log.read_text()
        return "Bastion proxy listening" in log.read_text(errors="replace")

    wait_for(listening, "the standalone proxy to listen")
    return proc, addr


def start_node(env: Env, tmp: Path, name: str, token: str) -> subprocess.Popen[bytes]:
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"data_dir: {tmp / name}\n"
        "auth_service: {enabled: false}\n"
        "proxy_service: {enabled: false}\n"
        "ssh_service:\n"
        f"  node_name: {name}\n"
        "  labels: {env: staging}\n"
        "  commands: [{name: kernel, command: [uname, -r], period: 1m}]\n"
        f"  proxy_server: {env.cluster.proxy}\n"
        f"  join_token: {token}\n"
        f"  ca_pin: {env.cluster.pin}\n"
    )
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen(
        [str(BIN / "bastion"), "start", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )


def resource_exists(cluster: Cluster, kind: str, name: str) -> bool:
    """``bctl get KIND/NAME`` succeeds, asked in this process with the cluster's admin identity:
    a poll costs a request, not a bctl start (about a second of CPU)."""
    from bastion.cli.identity import _admin_identity
    from bastion.client.api import AuthClient
    from bastion.contract.resources import GET_RESOURCE
    from bastion.errors import NotFound

    ident = _admin_identity(cluster.data_dir)

    async def get() -> bool:
        async with AuthClient(ident.addr, ident.ssl_context()) as client:
            try:
                await client.send(GET_RESOURCE, path={"kind": kind, "name": name})
            except NotFound:
                return False
            return True

    return asyncio.run(get())


def wait_node(env: Env, name: str, timeout: float = 30.0) -> None:
    """Until node ``name`` has registered with the cluster."""
    wait_for(
        lambda: resource_exists(env.cluster, "node", name), f"node {name} to register", timeout
    )


def wait_for(predicate, what: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def login_via_proxy(env: Env, user: User) -> None:
    result = env.bsh(
        user,
        "login",
        f"--proxy={env.cluster.proxy}",
        f"--user={user.name}",
        f"--ca-pin={env.cluster.pin}",
        "--password-stdin",
        input=f"{user.password}\n{fresh_totp(user)}\n",
    )
    assert result.returncode == 0, result.stderr


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
