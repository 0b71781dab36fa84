"""Access requests end to end (issue 17): the real daemon, a remote node, ``bsh`` and ``bctl``.

request -> two approvals -> ``bsh login --request-id`` -> ``bsh ssh`` reaches the node; deny
wins; self-review and a reviewer without rights are refused; a resource request reaches exactly
its node; ``bctl lock --access-request=ID`` ends the live session.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import BIN, Env, User, login_via_proxy, start_node, stop, unique, wait_for

pytestmark = pytest.mark.integration

LOGIN = getpass.getuser()


class World:
    def __init__(self, env: Env, node: str, tag: str) -> None:
        self.env = env
        self.node = node
        self.ops = f"ops-{tag}"
        self.req = f"req-{tag}"
        self.rev = f"rev-{tag}"
        self.users: dict[str, User] = {}

    def user(self, who: str, roles: str) -> User:
        if who not in self.users:
            user = self.env.new_user(roles)
            login_via_proxy(self.env, user)
            self.users[who] = user
        return self.users[who]


@pytest.fixture(scope="module")
def world(cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("requests")
    env = Env(cluster, tmp)
    tag = unique("")
    roles = f"""
kind: role
metadata: {{name: ops-{tag}}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{env: staging}}
---
kind: role
metadata: {{name: req-{tag}}}
spec:
  allow:
    request:
      roles: [ops-{tag}]
      search_as_roles: [ops-{tag}]
      thresholds: [{{approve: 2, deny: 1}}]
      max_duration: 30m
---
kind: role
metadata: {{name: rev-{tag}}}
spec:
  allow:
    review_requests: {{roles: [ops-{tag}]}}
"""
    env.admin_ok("create", "-f", "-", input=roles)
    out = env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    names = [unique("ar"), unique("ar")]
    nodes = [start_node(env, tmp, name, json.loads(out)["token"]) for name in names[:1]]
    out = env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    nodes.append(start_node(env, tmp, names[1], json.loads(out)["token"]))
    try:
        for name in names:
            wait_for(lambda n=name: env.admin("get", f"node/{n}").returncode == 0, f"node {name}")
        w = World(env, names[0], tag)
        w.other = names[1]  # type: ignore[attr-defined]
        yield w
    finally:
        for proc in nodes:
            stop(proc)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def _create(w: World, user: User, *args: str) -> str:
    out = _ok(w.env.bsh(user, "request", "create", *args, "--reason=INC-1", "--format", "json"))
    rid: str = json.loads(out)["id"]
    return rid


def _review(w: World, user: User, rid: str, verdict: str) -> subprocess.CompletedProcess[str]:
    return w.env.bsh(user, "request", "review", rid, f"--{verdict}", "--reason=checked")


def _ssh(
    w: World, user: User, node: str, command: str = "echo reached"
) -> subprocess.CompletedProcess[str]:
    return w.env.bsh(user, "ssh", f"{LOGIN}@{node}", command)


def test_two_approvals_assume_reach_the_node_and_a_lock_cuts_it(world: World) -> None:
    w = world
    alice = w.user("alice", w.req)
    bob, carol = w.user("bob", w.rev), w.user("carol", w.rev)
    assert _ssh(w, alice, w.node).returncode != 0  # no standing access
    rid = _create(w, alice, f"--roles={w.ops}")
    refused = _review(w, alice, rid, "approve")
    assert refused.returncode != 0 and "own" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "State:       PENDING (1/2 approvals)" in _ok(_review(w, bob, rid, "approve"))
    _ok(_review(w, carol, rid, "approve"))
    listed = _ok(w.env.bsh(bob, "request", "ls"))
    assert rid in listed and "APPROVED" in listed
    _ok(w.env.bsh(alice, "login", f"--proxy={w.env.cluster.proxy}", f"--request-id={rid}"))
    assert "reached" in _ok(_ssh(w, alice, w.node))
    # a live session, then the lock on the request id ends it
    home_env = {**os.environ, "BSH_HOME": str(alice.home), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [str(BIN / "bsh"), "ssh", f"{LOGIN}@{w.node}", "echo started; sleep 60; echo done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=home_env,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    w.env.admin_ok("lock", f"--access-request={rid}", "--ttl=5m")
    out, err = proc.communicate(timeout=20)
    assert "done" not in out
    assert proc.returncode != 0
    assert _ssh(w, alice, w.node).returncode != 0  # and new sessions are refused
    types = {e["type"] for e in w.env.events("--type", "access_request.create")}
    assert "access_request.create" in types


def test_deny_wins_and_a_reviewer_without_rights_is_refused(world: World) -> None:
    w = world
    erin = w.user("erin", w.req)
    bob, carol = w.user("bob", w.rev), w.user("carol", w.rev)
    alice = w.user("alice", w.req)  # may request, may not review
    login_via_proxy(w.env, alice)  # her assumed certificate may be locked by now
    rid = _create(w, erin, f"--roles={w.ops}")
    refused = _review(w, alice, rid, "approve")
    assert refused.returncode != 0 and "may not review" in refused.stderr
    _ok(_review(w, bob, rid, "approve"))
    assert "State:       DENIED" in _ok(_review(w, carol, rid, "deny"))
    late = w.env.bsh(erin, "request", "assume", rid)
    assert late.returncode != 0 and "denied" in late.stderr


def test_a_resource_request_reaches_exactly_its_node(world: World) -> None:
    w = world
    erin = w.user("erin", w.req)
    bob, carol = w.user("bob", w.rev), w.user("carol", w.rev)
    rid = _create(w, erin, f"--resource=node/{w.node}")
    _ok(_review(w, bob, rid, "approve"))
    _ok(_review(w, carol, rid, "approve"))
    _ok(w.env.bsh(erin, "request", "assume", rid))
    assert "reached" in _ok(_ssh(w, erin, w.node))
    other = _ssh(w, erin, w.other)  # type: ignore[attr-defined]
    assert other.returncode != 0


def test_admin_approves_outright_with_bctl(world: World, tmp_path: Path) -> None:
    w = world
    erin = w.user("erin", w.req)
    rid = _create(w, erin, f"--roles={w.ops}")
    listed = w.env.admin_ok("requests", "ls", "--state=pending")
    assert rid in listed
    assert "APPROVED" in w.env.admin_ok("requests", "approve", rid, "--reason=on call")
