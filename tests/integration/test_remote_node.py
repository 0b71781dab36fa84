"""A node on "another host": joins with a token through the proxy, heartbeats its labels, serves
SSH through its reverse tunnel, and sends its audit events to auth."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

from harness import Env, start_node, stop, unique, wait_for


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
        user = env.new_user("access", login, via_proxy=True)
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


def test_a_node_whose_agent_died_is_offline_in_ls_and_ssh_says_so_before_mfa(
    env: Env, tmp_path: Path
) -> None:
    name = unique("web")
    token = json.loads(
        env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    )["token"]
    role = unique("staging-mfa")  # every session needs a security-key touch (the user has none)
    env.admin_ok(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "kind": "role",
                "metadata": {"name": role},
                "spec": {
                    "options": {"require_session_mfa": True},
                    "allow": {"logins": ["ubuntu"], "node_labels": {"env": ["staging"]}},
                },
            }
        ),
    )
    user = env.new_user(role, "ubuntu")
    node = start_node(env, tmp_path, name, token)
    try:

        def status() -> str:
            listed = env.bsh(user, "ls", "env=staging")
            assert listed.returncode == 0, listed.stderr
            if listed.stdout.startswith("No nodes found"):
                return ""
            assert listed.stdout.split()[:4] == ["NAME", "STATUS", "ADDRESS", "LABELS"]
            rows = [line.split() for line in listed.stdout.splitlines()[1:]]
            return next((row[1] for row in rows if row[0] == name), "")

        assert wait_for(lambda: status() == "online", f"node {name} online in bsh ls")
        data = json.loads(env.bsh(user, "ls", "env=staging", "--format", "json").stdout)
        assert next(n for n in data if n["metadata"]["name"] == name)["online"] is True
        online = env.bsh(user, "ssh", f"ubuntu@{name}", "true")  # reaches the ceremony
        assert online.returncode != 0 and "offline" not in online.stderr
        ceremonies = len(env.events("--type", "mfa.session", "--user", user.name))
        assert ceremonies == 1  # it failed: the user has no security key
    finally:
        node.kill()  # a crash: no goodbye, its record outlives it until the heartbeat TTL
        node.wait(timeout=10)
    assert wait_for(lambda: status() == "offline", f"node {name} offline in bsh ls")
    refused = env.bsh(user, "ssh", f"ubuntu@{name}", "true")
    assert refused.returncode == 7, refused.stderr
    assert f"node {name} is offline" in refused.stderr
    assert "security key" not in refused.stderr.lower()  # no ceremony was started
    assert len(env.events("--type", "mfa.session", "--user", user.name)) == ceremonies
