"""Per-session MFA and MFA for admin actions (issue 5, items 4, 6, 8) through the real daemon.

One cluster of its own (the tests change the cluster auth preference), whose all-in-one node is
node A, plus a remote node B joined with a token. Users log in with password + TOTP; their
security key is Bastion's software authenticator (``BSH_SOFTWARE_AUTHENTICATOR``).
"""

from __future__ import annotations

import getpass
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    Cluster,
    Env,
    User,
    login_via_proxy,
    start_cluster,
    start_node,
    stop,
    unique,
    wait_for,
)

from bastion.rbac.session_mfa import MFA_REQUIRED_MESSAGE
from bastion.testing import require_binary

pytestmark = pytest.mark.integration

LOGIN = getpass.getuser()


@pytest.fixture(scope="module")
def mfa_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("mfa-cluster"), name="mfa.local")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def menv(mfa_cluster: Cluster, tmp_path: Path) -> Env:
    return Env(mfa_cluster, tmp_path)


@pytest.fixture(scope="module")
def nodes(mfa_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """[node A (the daemon's own node), node B (a remote node, label env=staging)]."""
    work = tmp_path_factory.mktemp("mfa-nodes")
    env = Env(mfa_cluster, work)
    local = wait_for(
        lambda: json.loads(env.admin_ok("get", "nodes", "--format", "json")), "the local node"
    )
    node_a = local[0]["metadata"]["name"]
    token = json.loads(
        env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    )["token"]
    node_b = unique("mfab")
    proc = start_node(env, work, node_b, token)
    try:
        wait_for(lambda: env.admin("get", f"node/{node_b}").returncode == 0, f"node {node_b}")
        yield [node_a, node_b]
    finally:
        stop(proc)


def _role(env: Env, *, mfa: bool, labels: str = "{'*': '*'}") -> str:
    name = unique("r")
    env.admin_ok(
        "create",
        "-f",
        "-",
        input=(
            f"kind: role\nmetadata: {{name: {name}}}\nspec:\n"
            f"  options: {{require_session_mfa: {str(mfa).lower()}}}\n"
            f"  allow:\n    logins: [{LOGIN}]\n    node_labels: {labels}\n"
        ),
    )
    return name


def _user(env: Env, roles: str) -> User:
    user = env.new_user(roles, LOGIN)
    login_via_proxy(env, user)
    return user


def _openssh(env: Env, user: User, node: str) -> subprocess.CompletedProcess[str]:
    require_binary("ssh")
    done = env.bsh(user, "config")
    assert done.returncode == 0, done.stderr
    cfg = user.home / "ssh_config"
    cfg.write_text(done.stdout + "    BatchMode yes\n    ConnectTimeout 30\n")
    return subprocess.run(
        ["ssh", "-F", str(cfg), f"{LOGIN}@{node}.{env.cluster.cluster}", "echo reached"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def test_ordinary_certificate_refused_where_session_mfa_is_required(
    menv: Env, nodes: list[str]
) -> None:
    user = _user(menv, _role(menv, mfa=True))
    for node in nodes:
        plain = _openssh(menv, user, node)
        assert plain.returncode != 0
        assert "reached" not in plain.stdout
        assert MFA_REQUIRED_MESSAGE in plain.stderr, plain.stderr
    events = menv.events("--type", "proxy.ssh", "--user", user.name)
    refused = [e for e in events if e["outcome"] == "failure"]
    assert refused and "per-session MFA required" in refused[-1]["reason"], events


def test_role_without_the_option_needs_no_mfa(menv: Env, nodes: list[str]) -> None:
    user = _user(menv, _role(menv, mfa=False))
    ran = menv.bsh(user, "ssh", f"{LOGIN}@{nodes[1]}", "echo reached")
    assert ran.returncode == 0 and "reached" in ran.stdout, ran.stderr
