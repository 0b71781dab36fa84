"""Risk signals on the real daemon: a burst of failed logins from one address is flagged."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from harness import Cluster, Env, unique, unverified_context, wait_for

from bastion.testing import new_public_key

pytestmark = pytest.mark.integration


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
