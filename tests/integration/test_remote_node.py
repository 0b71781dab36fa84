"""A node on "another host": joins with a token through the proxy, heartbeats its labels, serves
SSH through its reverse tunnel, and sends its audit events to auth."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

from harness import Env, login_via_proxy, start_node, stop, unique, wait_for


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
