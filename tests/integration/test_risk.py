"""Risk signals on the real daemon: a burst of failed logins from one address is flagged; a
stored ``risk_rule`` with a lock action cuts a live session; ``bctl risk ls/test``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness import BIN, Cluster, Env, unique, unverified_context, wait_for

from bastion.testing import new_public_key

pytestmark = pytest.mark.integration
LOGIN = os.environ.get("USER") or "root"


def _fail_login(cluster: Cluster, user: str, public_key: str) -> int:
    body = json.dumps({"user": user, "password": "wrong password!", "public_key": public_key})
    request = urllib.request.Request(
        f"https://{cluster.addr}/v1/login", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, context=unverified_context(), timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_failed_logins_from_one_address_raise_a_signal(env: Env, cluster: Cluster) -> None:
    _, public_key = new_public_key()
    names = [unique("ghost") for _ in range(10)]  # the default rule: 10 within 5 minutes
    for name in names:
        while _fail_login(cluster, name, public_key) == 429:  # the public rate limit
            time.sleep(0.5)

    def signal() -> dict[str, object] | None:
        failures = {e["id"]: e["user"] for e in env.events("--type", "user.login")}
        for event in env.events("--type", "risk.signal"):
            fields = event["fields"]
            mine = [failures.get(i) for i in fields["evidence"] if failures.get(i) in names]
            if fields["rule"] == "failed_logins" and mine:
                return event
        return None

    event = wait_for(signal, "a failed_logins risk signal", timeout=15)
    assert event["fields"]["subject"] == "ip:127.0.0.1"
    assert event["fields"]["action"] == "alert"


def test_a_lock_rule_cuts_a_live_session(env: Env, tmp_path: Path) -> None:
    """A lateral_movement rule (one node is enough, for this user only) locks the user: the
    session that fired it ends, and bctl risk ls / test show the rule and its firing."""
    user = env.new_user("access", LOGIN, via_proxy=True)
    rule = unique("lateral")
    spec = tmp_path / "rule.yaml"
    spec.write_text(
        f"kind: risk_rule\nmetadata: {{name: {rule}}}\nspec: {{type: lateral_movement, "
        f"threshold: 1, window: 1m, action: lock, lock_ttl: 1m, users: [{user.name}]}}\n"
    )
    env.admin_ok("create", "-f", str(spec))
    try:
        assert rule in env.admin_ok("get", "risk_rules")
        session = subprocess.Popen(
            [str(BIN / "bsh"), "ssh", f"{LOGIN}@{socket.gethostname()}",
             "echo started; sleep 60; echo done"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "BSH_HOME": str(user.home), "NO_COLOR": "1"},
        )  # fmt: skip
        # The rule may fire before "started" reaches us: the session.start event is the node's.
        out, err = session.communicate(timeout=20)  # a hang guard: the lock ends it in ~1 s
        assert "done" not in out and "suspicious activity" in out + err, (out, err)
        listed = env.admin_ok("risk", "ls")
        assert rule in listed and f"user:{user.name}" in listed, listed
        dry = json.loads(env.admin_ok("risk", "test", "--since", "10m", "--format", "json"))
        assert any(s["rule"] == rule for s in dry["signals"]), dry  # its session.start fired it
    finally:
        env.admin_ok("rm", f"risk_rule/{rule}")
