"""An agent's tunnel dies mid-session: the user gets a clean error, the tunnel comes back."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
from pathlib import Path

from harness import BIN, Env, start_node, stop, unique, wait_for, wait_node


def test_tunnel_dropped_mid_session_then_recovers(env: Env, tmp_path: Path) -> None:
    name = unique("drop")
    token = json.loads(
        env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    )["token"]
    node = start_node(env, tmp_path, name, token)
    try:
        wait_node(env, name)
        login = getpass.getuser()
        user = env.new_user("access", login, via_proxy=True)
        home_env = {**os.environ, "BSH_HOME": str(user.home), "NO_COLOR": "1"}
        session = subprocess.Popen(
            [str(BIN / "bsh"), "ssh", f"{login}@{name}", "echo started; sleep 120; echo done"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=home_env,
        )  # fmt: skip
        assert session.stdout is not None
        assert session.stdout.readline().strip() == "started"
        # Freeze the agent: its tunnel goes silent; the proxy's keepalive declares it dead.
        os.kill(node.pid, signal.SIGSTOP)
        try:
            # A hang guard, not a measurement: the session's command would run 120 s.
            out, err = session.communicate(timeout=45)
            assert session.returncode != 0
            assert "done" not in out
            # bsh ssh hands plain sessions to OpenSSH, whose words vary with the timing
            # ("Connection to ... closed by remote host.", "client_loop: send disconnect:
            # Broken pipe"); the built-in client says "error: ...". Any one line, no traceback.
            assert "Traceback" not in err and err.strip(), err
        finally:
            os.kill(node.pid, signal.SIGCONT)

        # The agent notices the dead tunnel, reconnects with backoff, and serves again.
        def works() -> bool:
            ran = env.bsh(user, "ssh", f"{login}@{name}", "echo back")
            return ran.returncode == 0 and "back" in ran.stdout

        wait_for(works, "the tunnel to come back", timeout=60)
    finally:
        stop(node)
