"""Launch the high-availability deployment of docs/ha.md on loopback, for tests and bench/ha.py.

Two (or more) auth servers share one PostgreSQL database and one key-encryption key; proxies run
in their own processes (``bastion start --roles=proxy --auth=A,B``), joined with ``proxy``
tokens; HAProxy (the Debian package) balances TCP to the proxies and sends the PROXY protocol v2;
an SSH node joins through HAProxy and keeps a reverse tunnel to every proxy. Every process is a
real ``bastion`` (or ``haproxy``) subprocess listening on 127.0.0.1 only.

Nothing in ``src`` imports this module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bastion.testing.peers.ports import free_port

__all__ = ["HACluster", "Proc", "connected_proxies", "free_port", "start_ha", "wait_for"]

BIN = Path(sys.executable).parent
PASSWORD = "correct horse battery staple"
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """Poll ``predicate`` until it returns a true value (raises TimeoutError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Proc:
    """One subprocess with its log file."""

    name: str
    args: list[str]
    log: Path
    addr: str = ""
    data_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_running(self) -> None:
        if not self.running:
            raise RuntimeError(f"{self.name} exited:\n{self.output()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown (the fault the HA set-up must survive)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class HACluster:
    work: Path
    dsn: str
    auths: list[Proc]
    proxies: list[Proc] = field(default_factory=list)
    haproxy: Proc | None = None
    node: Proc | None = None
    pin: str = ""
    lb: str = ""
    """``host:port`` of HAProxy: what users and agents are given."""

    def processes(self) -> list[Proc]:
        found = [*self.auths, *self.proxies]
        found += [p for p in (self.haproxy, self.node) if p is not None]
        return found

    def stop(self) -> None:
        for proc in reversed(self.processes()):
            proc.stop()

    def admin_dir(self) -> Path:
        """The data dir of a running auth server (bctl --data-dir talks to it)."""
        for auth in self.auths:
            if auth.running and auth.data_dir is not None:
                return auth.data_dir
        raise RuntimeError("no auth server is running")

    def bctl(self, *args: str, input: str | None = None) -> str:
        done = run("bctl", "--data-dir", str(self.admin_dir()), *args, home=self.work / "admin",
                   input=input)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"bctl {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def token(self, kind: str) -> str:
        out = self.bctl("tokens", "add", f"--type={kind}", "--ttl=10m", "--format", "json")
        return str(json.loads(out)["token"])

    def start_proxy(self, index: int) -> Proc:
        """Start (or restart, same data dir and port) proxy number ``index``."""
        if index < len(self.proxies):
            proxy = self.proxies[index]
            proxy.start()
        else:
            port = free_port()
            data = self.work / f"proxy{index}"
            config = self.work / f"proxy{index}.yaml"
            auths = ",".join(a.addr for a in self.auths)
            config.write_text(
                f"data_dir: {data}\n"
                "auth_service: {enabled: false}\n"
                "ssh_service: {enabled: false}\n"
                "proxy_service:\n"
                f"  listen_addr: 127.0.0.1:{port}\n"
                "  trusted_proxy_sources: [127.0.0.1/32]\n"
                f"  auth_server: {auths}\n"
                f"  join_token: {self.token('proxy')}\n"
                f"  ca_pin: {self.pin}\n"
            )
            proxy = Proc(
                f"proxy{index}",
                [str(BIN / "bastion"), "start", "-c", str(config)],
                self.work / f"proxy{index}.log",
                addr=f"127.0.0.1:{port}",
                data_dir=data,
            ).start()
            self.proxies.append(proxy)
        mark = len(re.findall("Bastion proxy listening", proxy.output()))

        def up() -> bool:
            proxy.check_running()
            return len(re.findall("Bastion proxy listening", proxy.output())) > mark

        wait_for(up, f"{proxy.name} to listen")
        return proxy


def run(
    tool: str, *args: str, home: Path, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BSH_HOME": str(home), "NO_COLOR": "1", "HOME": str(home)}
    return subprocess.run(
        [str(BIN / tool), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=home,
        check=False,
    )


def _start_auth(work: Path, index: int, config: Path) -> tuple[Proc, str]:
    port = free_port()
    data = work / f"auth{index}"
    auth = Proc(
        f"auth{index}",
        [
            str(BIN / "bastion"),
            "start",
            "-c",
            str(config),
            "--roles=auth",
            "--data-dir",
            str(data),
            "--auth-addr",
            f"127.0.0.1:{port}",
        ],  # fmt: skip
        work / f"auth{index}.log",
        addr=f"127.0.0.1:{port}",
        data_dir=data,
    ).start()

    def ready() -> str:
        auth.check_running()
        found = re.search(r"CA pin:\s+(sha256:[0-9a-f]+)", auth.output())
        return found.group(1) if found else ""

    return auth, wait_for(ready, f"auth{index} to start", timeout=60)


def haproxy_config(bind: str, proxies: list[Proc]) -> str:
    """TCP balancing with the PROXY protocol v2 and fast health checks (a dead proxy leaves the
    rotation within about a second; ``redispatch`` retries a refused connect on the other)."""
    servers = "\n".join(
        f"    server {p.name} {p.addr} send-proxy-v2 check inter 300ms fall 1 rise 1"
        for p in proxies
    )
    return f"""global
    maxconn 4096

defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch

frontend bastion
    bind {bind}
    default_backend proxies

backend proxies
    balance roundrobin
{servers}
"""


def start_ha(
    work: Path,
    dsn: str,
    *,
    auths: int = 2,
    proxies: int = 2,
    node: str = "",
    labels: str = "",
    recordings: str = "",
) -> HACluster:
    """Start the whole deployment; ``node``: also start an SSH node of that name (joining
    through HAProxy); ``recordings``: the auth servers' shared recording store, a YAML flow
    mapping such as ``{type: s3, bucket: b, endpoint_url: ...}`` (default: each its own local
    directory). Raises RuntimeError (with the logs) when a process fails to start."""
    haproxy_bin = shutil.which("haproxy") or "/usr/sbin/haproxy"
    work.mkdir(parents=True, exist_ok=True)
    config = work / "auth.yaml"
    config.write_text(
        "cluster_name: ha.local\n"
        "storage:\n"
        "  type: postgres\n"
        f"  dsn: {dsn}\n"
        "auth_service:\n"
        f"  kek_file: {work / 'kek'}\n"
        '  second_factor: "off"\n'
        "  trusted_proxy_sources: [127.0.0.1/32]\n"
        "  rate_limit: {average: 1000, burst: 1000}\n"
        + (f"  recordings: {recordings}\n" if recordings else "")
    )
    cluster = HACluster(work=work, dsn=dsn, auths=[])
    try:
        for index in range(auths):  # one after the other: the first creates the CAs
            auth, pin = _start_auth(work, index, config)
            cluster.auths.append(auth)
            cluster.pin = pin
        for index in range(proxies):
            cluster.start_proxy(index)
        lb_port = free_port()
        cluster.lb = f"127.0.0.1:{lb_port}"
        cfg = work / "haproxy.cfg"
        cfg.write_text(haproxy_config(cluster.lb, cluster.proxies))
        haproxy = Proc(
            "haproxy", [haproxy_bin, "-db", "-f", str(cfg)], work / "haproxy.log", addr=cluster.lb
        ).start()
        cluster.haproxy = haproxy

        def listening() -> bool:
            haproxy.check_running()
            return _accepts(lb_port)

        wait_for(listening, "haproxy to listen")
        if node:
            cluster.node = start_node(cluster, node, labels)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_node(cluster: HACluster, name: str, labels: str = "") -> Proc:
    config = cluster.work / f"{name}.yaml"
    config.write_text(
        f"data_dir: {cluster.work / name}\n"
        "auth_service: {enabled: false}\n"
        "proxy_service: {enabled: false}\n"
        "ssh_service:\n"
        f"  node_name: {name}\n"
        f"  labels: {{{labels}}}\n"
        f"  proxy_server: {cluster.lb}\n"
        f"  join_token: {cluster.token('node')}\n"
        f"  ca_pin: {cluster.pin}\n"
    )
    node = Proc(
        name, [str(BIN / "bastion"), "start", "-c", str(config)], cluster.work / f"{name}.log"
    ).start()
    wanted = {p.addr for p in cluster.proxies}

    def tunnels() -> bool:
        node.check_running()
        return wanted <= tunnel_peers(node)

    wait_for(tunnels, f"{name} to hold a tunnel to every proxy", timeout=60)
    return node


def tunnel_peers(node: Proc) -> set[str]:
    """Proxies the node's log says it is connected to now (last connect after last loss)."""
    return connected_proxies(node.output())


def connected_proxies(log: str) -> set[str]:
    """Proxies an agent's ``log`` says it is connected to now (last connect after last loss)."""
    state: dict[str, bool] = {}
    for line in log.splitlines():
        found = re.search(r"tunnel: (connected to|disconnected from) proxy ([0-9.]+:[0-9]+)", line)
        if found:
            state[found.group(2)] = found.group(1) == "connected to"
    return {addr for addr, up in state.items() if up}


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
