"""A joined node renews its own host certificate (issue 18): with a short ``host_certs.ttl`` it
renews while its tunnel stays up and it keeps serving SSH, and an SSH host and user CA rotation
(``bctl auth rotate``: init, update, standby) completes with the node reachable, never joining
again. Its own cluster: a rotation changes the CAs every other test trusts."""

from __future__ import annotations

import getpass
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    BIN,
    Cluster,
    Env,
    login_via_proxy,
    start_cluster,
    stop,
    unique,
    wait_for,
    wait_node,
)


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("renewal-cluster"), name="renew.local")
    try:
        yield c
    finally:
        c.stop()


def _start_node(env: Env, tmp: Path, name: str, token: str) -> subprocess.Popen[bytes]:
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"data_dir: {tmp / name}\n"
        "auth_service: {enabled: false}\n"
        "proxy_service: {enabled: false}\n"
        "host_certs: {ttl: 1m, renew_at: 0.95, jitter: 0}\n"  # renews about every 3 s
        "ssh_service:\n"
        f"  node_name: {name}\n"
        "  labels: {env: renewal}\n"
        f"  proxy_server: {env.cluster.proxy}\n"
        f"  join_token: {token}\n"
        f"  ca_pin: {env.cluster.pin}\n"
    )
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen(
        [str(BIN / "bastion"), "start", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )


def _renewed(node_dir: Path) -> str:
    try:
        return str(json.loads((node_dir / "identity.json").read_text()).get("renewed", ""))
    except (OSError, ValueError):
        return ""  # between two renames of a renewal: read again


def _next_renewal(node_dir: Path) -> str:
    before = _renewed(node_dir)
    return str(wait_for(lambda: (_renewed(node_dir) or before) != before and _renewed(node_dir),
                        "the node to renew its host certificate", timeout=20))  # fmt: skip


def _ssh_ca(cert_pub: Path) -> str:
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(cert_pub)], capture_output=True, text=True, check=True
    ).stdout
    return next(line for line in listing.splitlines() if "Signing CA" in line)


def _rotate(env: Env, phase: str) -> None:
    for ca in ("host", "user"):
        env.admin_ok("auth", "rotate", f"--type={ca}", f"--phase={phase}")


def test_node_renews_while_serving_and_survives_a_ca_rotation(
    own_cluster: Cluster, tmp_path: Path
) -> None:
    env = Env(own_cluster, tmp_path)
    name = unique("renew")
    token = json.loads(
        env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    )["token"]
    node = _start_node(env, tmp_path, name, token)
    node_dir = tmp_path / name / "node"
    try:
        wait_node(env, name)
        joined_cert = (node_dir / "tls.crt").read_text()
        login = getpass.getuser()
        user = env.new_user("access", login, via_proxy=True)

        def ssh_ok(word: str) -> None:
            ran = env.bsh(user, "ssh", f"{login}@{name}", f"echo {word}")
            assert ran.returncode == 0, ran.stderr
            assert word in ran.stdout

        ssh_ok("before")
        _next_renewal(node_dir)
        _next_renewal(node_dir)  # twice: the second renewal presented the renewed certificate
        assert (node_dir / "tls.crt").read_text() != joined_cert
        assert not (node_dir / ".renewing").exists()
        ssh_ok("after-renewal")  # a new SSH connection: the renewed host key and certificate
        host_id = json.loads((node_dir / "identity.json").read_text())["host_id"]
        renewed = [e for e in env.events("--type", "cert.renewed") if e.get("user") == host_id]
        assert len(renewed) >= 2
        log = (tmp_path / f"{name}.log").read_text()
        assert "disconnected from proxy" not in log  # the tunnel stayed up throughout
        assert (node_dir / "tls.key").stat().st_mode & 0o777 == 0o600

        # A rotation of the SSH host and user CAs, with no new join.
        old_ca = _ssh_ca(node_dir / "cert.pub")
        _rotate(env, "init")
        _next_renewal(node_dir)  # the node learns the new user CA key
        _rotate(env, "update")
        _next_renewal(node_dir)
        _next_renewal(node_dir)  # at least one renewal wholly after the switch
        assert _ssh_ca(node_dir / "cert.pub") != old_ca
        _rotate(env, "standby")  # the old keys are no longer trusted
        login_via_proxy(env, user)  # the user's certificate and known_hosts: the new keys
        ssh_ok("after-rotation")
        assert env.admin("get", f"node/{name}").returncode == 0
        assert node.poll() is None
        joins = [e for e in env.events("--type", "join") if host_id in json.dumps(e)]
        assert len(joins) == 1  # joined once
    finally:
        stop(node)
