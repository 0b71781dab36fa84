"""A node on "another host": joins with a token through the proxy, heartbeats its labels, serves
SSH through its reverse tunnel, and sends its audit events to auth."""

from __future__ import annotations

import getpass
import json
import subprocess
import time
from pathlib import Path

from harness import BIN, Env, User, totp, unique


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
        input=f"{user.password}\n{totp(user.secret, 1)}\n",
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


def test_remote_node_joins_and_serves(env: Env, tmp_path: Path) -> None:
    name = unique("web")
    token = json.loads(
        env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    )["token"]
    node = start_node(env, tmp_path, name, token)
    try:

        def registered() -> dict | None:  # type: ignore[type-arg]
            got = env.admin("get", f"node/{name}", "--format", "json")
            return json.loads(got.stdout) if got.returncode == 0 else None

        resource = wait_for(registered, f"node {name} to heartbeat")
        assert resource["metadata"]["labels"] == {"env": "staging"}
        assert resource["spec"]["tunnel"] is True and resource["spec"]["host_id"]
        login = getpass.getuser()
        user = env.new_user("access", login)
        login_via_proxy(env, user)
        listed = env.bsh(user, "ls", "env=staging", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert name in listed.stdout
        ran = env.bsh(user, "ssh", f"{login}@{name}", "echo hello-$((40+2))")
        assert ran.returncode == 0, ran.stderr
        assert "hello-42" in ran.stdout

        def session_audited() -> list:  # type: ignore[type-arg]
            return [
                e
                for e in env.events("--type", "session.start", "--user", user.name)
                if e["target"] == name or name in json.dumps(e)
            ]

        events = wait_for(session_audited, "the node's session.start event to reach auth")
        assert events[-1]["fields"]["emitted_by"] == resource["spec"]["host_id"]

        # the token was single-use, and the name is bound to this host
        again = json.loads(
            env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
        )["token"]
        (tmp_path / "impostor").mkdir()
        impostor = start_node(env, tmp_path / "impostor", name, again)
        assert impostor.wait(timeout=30) != 0
        log = (tmp_path / "impostor" / f"{name}.log").read_text()
        assert "already in use" in log
        refused = env.events("--type", "join", "--outcome", "failure")
        assert any("already in use" in e.get("reason", "") for e in refused)
    finally:
        stop(node)
