"""Trusted clusters end to end (issue 23): a root and a leaf started by the test, each with its
own data directory; the leaf's own node is reached through the root's proxy.

Trust established with a root token (leaf pins the root's CA); a root user whose role maps on
the leaf reaches the leaf node with the mapped role (leaf audit names the root user and
cluster); an unmapped user is refused at the leaf; a leaf lock on ``ROOT/USER`` cuts a live
session; ``enabled: false`` refuses; deleting the trust removes the root's CAs. Also: ``bsh
clusters`` and ``bctl get remote_clusters``, plain OpenSSH ``ssh NODE.LEAF`` through ``bsh
config`` and the ``bsh ssh NODE.LEAF`` hand-off, a root lock cutting a session on the leaf, a leaf
role requiring per-session MFA refusing an ordinary root certificate and accepting one after the
root's MFA ceremony for that leaf node (``bsh ssh --cluster`` and plain OpenSSH), a root CA
rotation reaching the leaf, a leaf host CA rotation reaching the root (every phase, and a new
tunnel after it), and suspension shown on the root then resumed. All on the same two clusters
(module fixture); root users sign up through the root's proxy (one login each).
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest
from harness import BIN, Cluster, Env, User, run, start_cluster, start_proxy, wait_for

from bastion.testing import missing_peer
from bastion.testing.peers.sshd import SshdUnavailable, find_ssh_binary

pytestmark = pytest.mark.integration

LOGIN = getpass.getuser()


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Cluster]]:
    dirs = [(tmp_path_factory.mktemp(n), f"{n}.test") for n in ("root", "leaf")]
    with ThreadPoolExecutor(2) as pool:  # both start at once
        futures = [pool.submit(start_cluster, d, name=name) for d, name in dirs]
        wait(futures)
    started = [f.result() for f in futures if f.exception() is None]
    try:
        root, leaf = (f.result() for f in futures)  # a start that failed fails here
        yield root, leaf
    finally:
        for cluster in reversed(started):
            cluster.stop()


def _trust_yaml(root: Cluster, token: str, enabled: bool = True) -> str:
    return (
        "kind: trusted_cluster\n"
        f"metadata: {{name: {root.cluster}}}\n"
        "spec:\n"
        f"  enabled: {'true' if enabled else 'false'}\n"
        f"  proxy_addr: {root.proxy}\n"
        f"  token: '{token}'\n"
        f"  ca_pin: {root.pin}\n"
        "  role_map:\n"
        '    - {remote: "^access$", local: [access]}\n'
        '    - {remote: "ops-(.*)", local: ["$1"]}\n'
    )


def _live(user: User, *argv: str) -> subprocess.Popen[str]:
    """A session printing ``started`` then sleeping (the caller cuts it)."""
    env = {**os.environ, "BSH_HOME": str(user.home), "NO_COLOR": "1"}
    live = subprocess.Popen(
        [*argv, "echo started; sleep 60; echo done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert live.stdout is not None and live.stdout.readline().strip() == "started"
    return live


def _clusters_and_plain_openssh(
    root_env: Env, leaf_env: Env, mapped: User, unmapped: User, node: str, tmp_path: Path
) -> None:
    """``bsh clusters`` lists only reachable leaves; ``bctl get remote_clusters`` shows the
    tunnel's status; plain ``ssh NODE.LEAF`` through ``bsh config`` and ``bsh ssh NODE.LEAF``
    (the OpenSSH hand-off) reach the leaf node with a leaf certificate."""
    leaf = leaf_env.cluster.cluster
    listed = root_env.bsh(mapped, "clusters", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert [c["name"] for c in found] == [leaf] and found[0]["status"] == "online", found
    assert "access" in found[0]["roles"] and found[0]["last_heartbeat"]
    hidden = root_env.bsh(unmapped, "clusters", "--format", "json")
    assert hidden.returncode == 0 and json.loads(hidden.stdout) == [], hidden.stderr
    remote = json.loads(root_env.admin_ok("get", f"remote_cluster/{leaf}", "--format", "json"))
    assert remote["spec"]["connection"] == "online" and remote["spec"]["last_heartbeat"]

    plain = _plain_ssh(root_env, mapped, f"{LOGIN}@{node}.{leaf}", "echo plain-openssh", tmp_path)
    assert plain.returncode == 0 and "plain-openssh" in plain.stdout, plain.stderr
    handoff = root_env.bsh(mapped, "ssh", f"{LOGIN}@{node}.{leaf}", "echo handed-off")
    assert handoff.returncode == 0 and "handed-off" in handoff.stdout, handoff.stderr
    refused = root_env.bsh(unmapped, "proxy", "leaf-cert", "--force", leaf)
    assert refused.returncode != 0 and "denied" in refused.stderr, refused.stderr


def _plain_ssh(
    root_env: Env, user: User, target: str, command: str, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """``ssh TARGET COMMAND`` with OpenSSH configured by the user's ``bsh config``."""
    try:
        ssh = find_ssh_binary("ssh")
    except SshdUnavailable as exc:
        missing_peer(str(exc))
    done = root_env.bsh(user, "config")
    leaf = target.split(".", 1)[1]
    assert done.returncode == 0 and f"Host *.{leaf}" in done.stdout, done.stderr
    cfg = tmp_path / f"ssh_config_{user.name}"
    cfg.write_text(done.stdout + "Host *\n    BatchMode yes\n    ConnectTimeout 30\n")
    path = f"{BIN}:{os.environ['PATH']}"
    full = {**os.environ, "BSH_HOME": str(user.home), "PATH": path, **env}
    return subprocess.run(
        [ssh, "-F", str(cfg), target, command],
        capture_output=True, text=True, env=full, timeout=60, check=False,
    )  # fmt: skip


def _root_lock_and_leaf_mfa(root_env: Env, leaf_env: Env, node: str, tmp_path: Path) -> None:
    """A lock created on the root cuts the user's live session on the leaf (the root proxy
    relays it) and refuses new ones; a leaf role requiring per-session MFA refuses an ordinary
    root certificate, and admits a root user after the root's per-session MFA ceremony (a
    software security key) for that leaf, node and login."""
    leaf = leaf_env.cluster.cluster
    user = root_env.new_user("access", LOGIN)
    live = _live(user, str(BIN / "bsh"), "ssh", f"--cluster={leaf}", f"{LOGIN}@{node}")
    root_env.admin_ok("lock", f"--user={user.name}", "--message=root lock")
    out, _ = live.communicate(timeout=20)
    assert "done" not in out
    again = root_env.bsh(user, "ssh", f"--cluster={leaf}", f"{LOGIN}@{node}", "echo again")
    assert again.returncode != 0 and "again" not in again.stdout

    root_role = "kind: role\nmetadata: {name: ops-mfaonly}\nspec: {allow: {logins: [x]}}\n"
    leaf_role = (
        "kind: role\nmetadata: {name: mfaonly}\nspec:\n"
        "  options: {require_session_mfa: true}\n"
        f"  allow:\n    logins: [{LOGIN}]\n    node_labels: {{'*': '*'}}\n"
    )
    for env, text in ((root_env, root_role), (leaf_env, leaf_role)):
        role = tmp_path / "role.yaml"
        role.write_text(text)
        env.admin_ok("create", "-f", str(role))
    strict = root_env.new_user("ops-mfaonly", LOGIN)
    no_mfa = root_env.bsh(strict, "ssh", f"--cluster={leaf}", f"{LOGIN}@{node}", "echo x")
    assert no_mfa.returncode != 0 and "MFA" in no_mfa.stderr, no_mfa.stderr

    # The ceremony with the root: a user with a (software) security key gets a 1-minute root
    # certificate scoped to this leaf, node and login, and reaches the leaf node.
    root_env.admin_ok("create", "--force", "-f", "-", input=_SOFT_KEYS)
    keyed, invite = root_env.add_user("ops-mfaonly", LOGIN)
    key = root_env.root / f"{keyed.name}-key.json"
    joined = root_env.bsh(
        keyed,
        "login",
        f"--proxy={root_env.cluster.proxy}",
        f"--invite={invite['token']}",
        f"--ca-pin={root_env.cluster.pin}",
        "--password-stdin",
        "--mfa=webauthn",
        f"--software-authenticator={key}",
        input=keyed.password + "\n",
    )
    assert joined.returncode == 0, joined.stderr
    argv = ("ssh", f"--cluster={leaf}", f"{LOGIN}@{node}", "echo with-mfa")
    with_key = run("bsh", *argv, home=keyed.home, env={"BSH_SOFTWARE_AUTHENTICATOR": str(key)})
    assert with_key.returncode == 0 and "with-mfa" in with_key.stdout, with_key.stderr
    # Plain OpenSSH (ssh NODE.LEAF through bsh config) runs the same ceremony (Match exec):
    # the leaf certificate and the route carry the per-session MFA.
    software = {"BSH_SOFTWARE_AUTHENTICATOR": str(key)}
    plain = _plain_ssh(
        root_env, keyed, f"{LOGIN}@{node}.{leaf}", "echo plain-mfa", tmp_path, **software
    )
    assert plain.returncode == 0 and "plain-mfa" in plain.stdout, plain.stderr
    scope = f"session:{leaf}/{node}:{LOGIN}"
    events = root_env.events("--type", "mfa.session,proxy.cluster")
    assert len([e for e in events if scope in json.dumps(e)]) >= 2, events[-4:]
    assert any(e["type"] == "proxy.cluster" and leaf in json.dumps(e) for e in events)


def _standalone_root_proxy(
    root: Cluster, root_env: Env, leaf_env: Env, node: str, tmp_path: Path
) -> None:
    """A root proxy in its own process takes the leaf's tunnel (the root advertises it; the
    leaf's CAs come from its watch): ``bsh ssh --cluster=LEAF`` through it reaches the leaf node,
    the root audits ``proxy.cluster`` from that proxy and the leaf its own session."""
    leaf = leaf_env.cluster.cluster
    work = tmp_path / "standalone"
    work.mkdir()
    proc, addr = start_proxy(Env(root, tmp_path / "r-auth"), work)  # joined at auth's address
    try:
        # A root user whose profile names that proxy (it passes logins through to auth only
        # from auth's trusted_proxy_sources: this cluster has none, so sign up at the other).
        user = root_env.new_user("access", LOGIN)
        for profile in user.home.rglob("profile.json"):
            profile.write_text(profile.read_text().replace(root_env.cluster.addr, addr))

        def via_standalone() -> subprocess.CompletedProcess[str] | None:
            argv = ("ssh", f"--cluster={leaf}", f"{LOGIN}@{node}", "echo via-standalone")
            done = root_env.bsh(user, *argv)
            return done if done.returncode == 0 else None

        ran = wait_for(via_standalone, "the leaf's tunnel to the standalone proxy", timeout=30)
        assert "via-standalone" in ran.stdout, ran.stderr

        def routed() -> bool:  # delivered from that proxy's event spool (emitted_by: its host)
            found = root_env.events("--type", "proxy.cluster")
            return any(
                e.get("user") == user.name
                and e.get("fields", {}).get("leaf_cluster") == leaf
                and e.get("fields", {}).get("emitted_by")
                for e in found
            )

        wait_for(routed, "proxy.cluster from the standalone proxy in the root's audit")
        who = f"{root.cluster}/{user.name}"
        leaf_events = leaf_env.events("--type", "proxy.ssh")
        assert any(e.get("user") == who for e in leaf_events), leaf_events[-3:]
        # Its writes go through auth's API (POST /v1/trust/tunnel: the leaf's CAs pushed
        # through this tunnel, its status); none was refused. (The auth process's proxy
        # records the same leaf too: unit tests show the standalone's own writes.)
        spec = _remote(root_env, leaf)
        assert spec["connection"] == "online" and spec["last_heartbeat"], spec
        text = (work / "proxy.log").read_text(errors="replace")
        assert "not recorded" not in text and "CAs pushed by leaf" not in text, text[-2000:]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _remote(root_env: Env, leaf: str) -> dict[str, object]:
    got = json.loads(root_env.admin_ok("get", f"remote_cluster/{leaf}", "--format", "json"))
    return dict(got["spec"])


def _leaf_rotation(
    root_env: Env, leaf_env: Env, ssh: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """A host TLS CA rotation on the leaf reaches the root through the leaf's tunnel in each
    phase (the root accepts the leaf's tunnel with the CAs it holds for that leaf), and access
    goes on: init (the new key trusted at the root), update (the leaf's tunnel certificate is
    re-issued by the new key for its next connection), standby (the old key dropped)."""
    leaf = leaf_env.cluster.cluster
    before = str(_remote(root_env, leaf)["cas"]["tls_host_ca"])  # type: ignore[index]
    seen = [before]
    for phase, count in (("init", 2), ("update", 2), ("standby", 1)):
        leaf_env.admin_ok("auth", "rotate", "--type=tls-host", f"--phase={phase}")

        def pushed(count: int = count) -> bool:
            pem = str(_remote(root_env, leaf)["cas"]["tls_host_ca"])  # type: ignore[index]
            if pem.count("BEGIN CERTIFICATE") == count and pem != seen[-1]:
                seen.append(pem)
                return True
            return False

        wait_for(pushed, f"the leaf's host CA ({phase}) at the root", timeout=20)
    assert before not in seen[-1]
    ran = ssh("echo rotated")
    assert ran.returncode == 0 and "rotated" in ran.stdout, ran.stderr


_SOFT_KEYS = """\
kind: cluster_auth_preference
metadata: {name: cluster-auth-preference}
spec:
  second_factor: "on"
  allow_software_authenticator: true
"""


@pytest.mark.timeout(600)  # two clusters and ~40 CLI runs in one test (shared clusters)
def test_trust_access_refusals_lock_and_suspension(
    two: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    root, leaf = two
    # Root users sign up through the root's proxy (their profiles go there: no second login).
    root_env = Env(dataclasses.replace(root, addr=root.proxy), tmp_path / "r")
    leaf_env = Env(leaf, tmp_path / "l")
    token = json.loads(
        root_env.admin_ok("tokens", "add", "--type=trusted_cluster", "--format", "json")
    )["token"]
    spec = tmp_path / "trusted_cluster.yaml"
    # A wrong pin is refused before the token is sent.
    spec.write_text(_trust_yaml(root, token).replace(root.pin, "sha256:" + "0" * 64))
    bad = leaf_env.admin("create", "-f", str(spec))
    assert bad.returncode != 0 and "pin" in bad.stderr, bad.stderr
    spec.write_text(_trust_yaml(root, token))
    made = leaf_env.admin("create", "-f", str(spec))
    assert made.returncode == 0, made.stderr
    # The token was single use.
    again = leaf_env.admin("create", "--force", "-f", str(spec))
    assert again.returncode != 0 and "token" in again.stderr.lower(), again.stderr
    stored = leaf_env.admin_ok("get", f"trusted_cluster/{root.cluster}")
    assert token not in stored and "root_cas" in stored

    mapped = root_env.new_user("access", LOGIN)
    contractor = tmp_path / "contractor.yaml"
    contractor.write_text(
        "kind: role\nmetadata: {name: contractor}\nspec:\n  allow:\n"
        "    logins: ['{{internal.logins}}']\n    node_labels: {'*': '*'}\n"
    )
    root_env.admin_ok("create", "-f", str(contractor))
    unmapped = root_env.new_user("contractor", LOGIN)  # a role the leaf does not map

    def ls() -> list[dict[str, object]] | None:
        listed = root_env.bsh(mapped, "ls", f"--cluster={leaf.cluster}", "--format", "json")
        return json.loads(listed.stdout) if listed.returncode == 0 else None

    nodes = wait_for(ls, "bsh ls through the root to the leaf (leaf tunnel up)", timeout=20)
    node = str(nodes[0]["metadata"]["name"])  # the leaf's own node, as its roles show it

    def ssh(user: object, *cmd: str) -> subprocess.CompletedProcess[str]:
        return root_env.bsh(user, "ssh", f"--cluster={leaf.cluster}", f"{LOGIN}@{node}", *cmd)  # type: ignore[arg-type]

    ran = ssh(mapped, "echo via-root")
    assert ran.returncode == 0 and "via-root" in ran.stdout, ran.stderr
    refused = ssh(unmapped, "echo no")
    assert refused.returncode != 0 and "no" not in refused.stdout
    leaf_events = leaf_env.events("--type", "proxy.ssh,trust.access")
    who = f"{root.cluster}/{mapped.name}"
    assert any(e.get("user") == who and e.get("type") == "proxy.ssh" for e in leaf_events), (
        leaf_events[-3:]
    )
    assert any(
        e.get("user") == unmapped.name and e.get("outcome") == "failure"
        for e in leaf_events
        if e.get("type") == "trust.access"
    )

    _standalone_root_proxy(root, root_env, leaf_env, node, tmp_path)
    _clusters_and_plain_openssh(root_env, leaf_env, mapped, unmapped, node, tmp_path)
    _root_lock_and_leaf_mfa(root_env, leaf_env, node, tmp_path)

    # A CA rotation on the root reaches the leaf through the tunnel ("init": the new key is
    # trusted; every phase and the new key's certificates: tests/unit/auth/test_trust.py).
    root_env.admin_ok("auth", "rotate", "--type=tls-user", "--phase=init")

    def leaf_user_cas() -> int:
        got = json.loads(
            leaf_env.admin_ok("get", f"trusted_cluster/{root.cluster}", "--format", "json")
        )
        return str(got["spec"]["status"]["root_cas"]["tls_user_ca"]).count("BEGIN CERTIFICATE")

    wait_for(lambda: leaf_user_cas() == 2, "the root's rotated user CA on the leaf", timeout=20)

    # A host CA rotation on the leaf reaches the root; access goes on through both rotations.
    _leaf_rotation(root_env, leaf_env, lambda *cmd: ssh(mapped, *cmd))

    # Suspension (shown on the root), resumption (a new tunnel, with the certificate of the
    # leaf's new host CA key: the root accepts it with the CAs the leaf pushed).
    spec.write_text(_trust_yaml(root, "", enabled=False))
    upd = leaf_env.admin("create", "--force", "-f", str(spec))
    assert upd.returncode == 0, upd.stderr
    assert ssh(mapped, "echo suspended").returncode != 0
    wait_for(lambda: _remote(root_env, leaf.cluster)["connection"] == "suspended", "suspended")
    spec.write_text(_trust_yaml(root, "", enabled=True))
    leaf_env.admin_ok("create", "--force", "-f", str(spec))
    resumed = wait_for(
        lambda: (r := ssh(mapped, "echo resumed")).returncode == 0 and r, "resumed", timeout=30
    )
    assert "resumed" in resumed.stdout

    # A leaf lock on ROOT/USER cuts a live session.
    live = _live(mapped, str(BIN / "bsh"), "ssh", f"--cluster={leaf.cluster}", f"{LOGIN}@{node}")
    leaf_env.admin_ok("lock", f"--user={who}", "--message=compromised laptop")
    out, _ = live.communicate(timeout=20)
    assert "done" not in out
    assert ssh(mapped, "echo again").returncode != 0

    # Deletion.
    leaf_env.admin_ok("rm", f"trusted_cluster/{root.cluster}")
    assert root.cluster not in leaf_env.admin_ok("get", "trusted_clusters")
