"""High availability as a user runs it (docs/ha.md): two auth servers and two proxies on one
PostgreSQL, HAProxy in front with the PROXY protocol, an SSH node joined through HAProxy.

Faults, one after the other on one deployment (bounded: about a minute):

* PostgreSQL restarts: both auth servers resume, no audit event is lost, no index is doubled
  (``bctl audit verify`` checks the whole log);
* a proxy is killed (SIGKILL): clients reconnect through the other, the node keeps its tunnel to
  the survivor, and the killed proxy's spooled audit events arrive once it is back;
* an auth server is killed: logins (certificate issuance) continue through the other.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.testing import missing_peer
from bastion.testing.ha import BIN, PASSWORD, HACluster, run, start_ha, tunnel_peers, wait_for
from bastion.testing.peers.postgres import PgServer, create_database

pytestmark = [pytest.mark.needs_postgres, pytest.mark.integration]
NODE = "ha-node"


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[Any, str, str]]:
    """moto's standalone S3 server on loopback and a bucket of our own: the recordings store
    both auth servers share."""
    import boto3
    from moto import server as server_mod

    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")  # fmt: skip
    bucket = f"ha-{uuid.uuid4().hex[:12]}"  # moto keeps buckets per process: our own one
    client.create_bucket(Bucket=bucket)
    try:
        yield (
            client,
            bucket,
            (
                f"{{type: s3, bucket: {bucket}, prefix: ha/, region: us-east-1, "
                f"endpoint_url: '{endpoint}', access_key_id: k, secret_access_key: s}}"
            ),
        )
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ha(
    postgres_server: PgServer,
    s3: tuple[Any, str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HACluster]:
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        missing_peer("haproxy is not installed (Debian package haproxy)")
    dsn = asyncio.run(create_database(postgres_server))
    cluster = start_ha(
        tmp_path_factory.mktemp("ha"), dsn, node=NODE, labels="env: ha", recordings=s3[2]
    )
    try:
        yield cluster
    finally:
        cluster.stop()


class Client:
    """A user with bsh, logged in through HAProxy."""

    def __init__(self, ha: HACluster, name: str) -> None:
        self.ha = ha
        self.name = name
        self.home = ha.work / f"home-{name}"
        invite = json.loads(
            ha.bctl(
                "users",
                "add",
                name,
                "--roles=access",
                f"--logins={getpass.getuser()}",
                "--format",
                "json",
            )  # fmt: skip
        )
        token, pin = invite["token"], ha.pin
        done = self.bsh("login", f"--proxy={ha.lb}", f"--invite={token}", f"--ca-pin={pin}",
                        "--password-stdin", input=f"{PASSWORD}\n")  # fmt: skip
        assert done.returncode == 0, done.stderr

    def bsh(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run("bsh", *args, home=self.home, input=input)

    def login(self) -> subprocess.CompletedProcess[str]:
        return self.bsh("login", f"--proxy={self.ha.lb}", f"--user={self.name}",
                        "--password-stdin", input=f"{PASSWORD}\n")  # fmt: skip

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        return self.bsh("ssh", f"{getpass.getuser()}@{NODE}", command)

    def shell(self, line: str, expect: str) -> None:
        """An interactive (recorded) session: type ``line`` in a PTY, see ``expect``, exit."""
        import pexpect

        env = {**os.environ, "BSH_HOME": str(self.home), "HOME": str(self.home), "TERM": "xterm"}
        child = pexpect.spawn(str(BIN / "bsh"), ["ssh", f"{getpass.getuser()}@{NODE}"],
                              env=env, cwd=str(self.home), timeout=30)  # fmt: skip
        try:
            child.sendline(f"{line}; exit")
            child.expect(expect)
            child.expect(pexpect.EOF)
        finally:
            child.close()

    def recordings(self) -> list[dict[str, Any]]:
        done = self.bsh("recordings", "ls", "--format", "json")
        assert done.returncode == 0, done.stderr
        items: list[dict[str, Any]] = json.loads(done.stdout)
        return items


def _proxy_ssh_events(ha: HACluster, user: str) -> list[dict[str, object]]:
    out = ha.bctl("audit", "search", "--type=proxy.ssh", f"--user={user}", "--limit=1000",
                  "--format", "json")  # fmt: skip
    return [e for e in json.loads(out) if e.get("outcome") == "success"]


def _verify_audit(ha: HACluster) -> None:
    """The whole log on PostgreSQL: every index once, every checkpoint consistent."""
    config = ha.work / "auth.yaml"
    verified = run("bctl", "-c", str(config), "audit", "verify", home=ha.work / "admin")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _ssh_until_ok(client: Client, command: str, timeout: float = 20.0) -> tuple[str, float]:
    """Retry as a user would until a session succeeds; returns (output, seconds taken)."""
    started = time.monotonic()

    def attempt() -> str:
        done = client.ssh(command)
        return done.stdout if done.returncode == 0 else ""

    out = wait_for(attempt, f"ssh by {client.name} to succeed", timeout=timeout)
    return out, time.monotonic() - started


def test_ha_survives_postgres_restart_proxy_and_auth_loss(
    ha: HACluster, postgres_server: PgServer, s3: tuple[Any, str, str]
) -> None:
    alice = Client(ha, "alice")
    # Any proxy reaches the node: HAProxy alternates, every session works.
    for i in range(4):
        done = alice.ssh(f"echo hello-{i}")
        assert done.returncode == 0 and f"hello-{i}" in done.stdout, done.stderr
    # The web/API route reached auth with the client's real address (PROXY header from the
    # proxy, trusted by auth), not the proxy's socket: the login event carries 127.0.0.1 and a
    # client port that is not a proxy's listening port.
    logins = json.loads(ha.bctl("audit", "search", "--type=user.login", "--user=alice",
                                "--format", "json"))  # fmt: skip
    assert logins and all(str(e.get("remote_addr", "")).startswith("127.0.0.1") for e in logins)

    # An interactive session is recorded into the S3 bucket both auth servers share.
    alice.shell("echo rec-$((6*7))", "rec-42")
    [recorded] = wait_for(alice.recordings, "the recording listed")

    # ---- PostgreSQL restarts: both auth servers resume; nothing lost, nothing doubled.
    before = _proxy_ssh_events(ha, "alice")
    postgres_server.restart()
    for auth in ha.auths:
        wait_for(
            lambda a=auth: (
                run(
                    "bctl", "--data-dir", str(a.data_dir), "get", "users", home=ha.work / "admin"
                ).returncode
                == 0
            ),  # fmt: skip
            f"{auth.name} to answer after the database restart",
        )
    assert alice.login().returncode == 0
    out, _ = _ssh_until_ok(alice, "echo after-pg")
    assert "after-pg" in out
    wait_for(lambda: len(_proxy_ssh_events(ha, "alice")) >= len(before) + 1, "the new event")
    _verify_audit(ha)

    # ---- Kill a proxy: clients reconnect through the other; the node keeps that tunnel.
    sessions = len(_proxy_ssh_events(ha, "alice"))
    for i in range(4):  # events spooled on both proxies
        assert alice.ssh(f"echo spool-{i}").returncode == 0
    victim, survivor = ha.proxies
    victim.kill()
    for i in range(4):
        out, _ = _ssh_until_ok(alice, f"echo survivor-{i}")
        assert f"survivor-{i}" in out
    assert ha.node is not None and survivor.addr in tunnel_peers(ha.node)
    # The killed proxy's spool is delivered when it comes back (same data dir): no event lost.
    ha.start_proxy(0)
    wait_for(lambda: len(_proxy_ssh_events(ha, "alice")) >= sessions + 8,
             "every proxy.ssh event, the killed proxy's included")  # fmt: skip
    wait_for(
        lambda: victim.addr in tunnel_peers(ha.node), "the node's tunnel to the restarted proxy"
    )  # type: ignore[arg-type]

    # ---- Kill an auth server: logins and certificate issuance continue through the other.
    ha.auths[0].kill()
    for _ in range(3):
        done = alice.login()
        assert done.returncode == 0, done.stderr
    out, _ = _ssh_until_ok(alice, "echo auth-down")
    assert "auth-down" in out
    bob = Client(ha, "bob")  # invite + first login, served by the surviving auth server
    assert bob.ssh("echo bob").returncode == 0
    # The recording made before is served by the surviving auth server, from S3, intact.
    cast = ha.work / "rec.cast"
    got = alice.bsh("recordings", "download", recorded["session_id"], "-o", str(cast))
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(cast.read_bytes()).hexdigest() == recorded["sha256"]
    client, bucket, _ = s3
    listed = client.list_objects_v2(Bucket=bucket, Prefix="ha/").get("Contents", [])
    keys = {o["Key"] for o in listed}
    assert f"ha/{recorded['session_id']}.cast" in keys
    _verify_audit(ha)
