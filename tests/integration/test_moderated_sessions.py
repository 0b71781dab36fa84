"""Moderated sessions and session join end to end (issue 17 parts 4 and 5): the real daemon, a
remote node, ``bsh ssh``, ``bsh sessions ls`` and ``bsh join``.

A session of a role with ``require_session_join`` waits until a moderator joins, then runs, and
ends when the moderator leaves (``on_leave: terminate``); an observer cannot type while a peer
can; a user who may not join a session does not see it in ``bsh sessions ls``.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from harness import BIN, Env, User, start_node, stop, unique, wait_for, wait_node

pytestmark = pytest.mark.integration

LOGIN = getpass.getuser()


class World:
    def __init__(self, env: Env, node: str, tag: str) -> None:
        self.env, self.node, self.tag = env, node, tag
        self.users: dict[str, User] = {}

    def user(self, who: str, role: str) -> User:
        if who not in self.users:
            # The invite accepted through the proxy: one login gives a profile for bsh ssh.
            via_proxy = Env(dataclasses.replace(self.env.cluster, addr=self.env.cluster.proxy),
                            self.env.root)  # fmt: skip
            self.users[who] = via_proxy.new_user(f"{role}-{self.tag}")
        return self.users[who]

    def popen(self, user: User, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "BSH_HOME": str(user.home), "NO_COLOR": "1"}
        return subprocess.Popen(
            [str(BIN / "bsh"), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env,
        )  # fmt: skip

    def sessions(self, user: User) -> list[dict[str, Any]]:
        out = self.env.bsh(user, "sessions", "ls", "--format", "json")
        assert out.returncode == 0, out.stderr
        items: list[dict[str, Any]] = json.loads(out.stdout)
        return items

    def session_of(self, viewer: User, owner: User, state: str = "") -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for item in self.sessions(viewer):
                if item["owner"] == owner.name and (not state or item["state"] == state):
                    return item
            return None

        found: dict[str, Any] = wait_for(find, f"{owner.name}'s session", timeout=15)
        return found


def read_until(proc: subprocess.Popen[bytes], text: str, timeout: float = 15) -> str:
    """Read the process's stdout until ``text`` shows up (or fail after ``timeout``)."""
    assert proc.stdout is not None
    fd, seen = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            raise AssertionError(f"no {text!r} within {timeout}s; got {seen!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError(f"output ended before {text!r}; got {seen!r}")
        seen += chunk
    return seen.decode(errors="replace")


def typed(proc: subprocess.Popen[bytes], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    proc.stdin.flush()


@pytest.fixture(scope="module")
def world(cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("moderated")
    env = Env(cluster, tmp)
    tag = unique("")
    roles = f"""
kind: role
metadata: {{name: prod-{tag}}}
spec:
  options:
    require_session_join: [{{name: watch, modes: [moderator], count: 1, on_leave: terminate}}]
  allow: {{logins: [{LOGIN}], node_labels: {{env: staging}}}}
---
kind: role
metadata: {{name: dev-{tag}}}
spec:
  allow: {{logins: [{LOGIN}], node_labels: {{env: staging}}}}
---
kind: role
metadata: {{name: mod-{tag}}}
spec:
  allow:
    join_sessions: [{{roles: [prod-{tag}, dev-{tag}], modes: [moderator, observer]}}]
---
kind: role
metadata: {{name: peer-{tag}}}
spec:
  allow:
    join_sessions: [{{roles: [dev-{tag}], modes: [peer]}}]
"""
    env.admin_ok("create", "-f", "-", input=roles)
    out = env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    name = unique("mod")
    node = start_node(env, tmp, name, json.loads(out)["token"])
    try:
        wait_node(env, name)
        yield World(env, name, tag)
    finally:
        stop(node)


def test_a_moderated_session_waits_for_its_moderator_and_ends_when_they_leave(
    world: World,
) -> None:
    w = world
    alice, bob, carl = w.user("alice", "prod"), w.user("bob", "mod"), w.user("carl", "dev")
    owner = w.popen(alice, "ssh", f"{LOGIN}@{w.node}", "echo started; sleep 20; echo done")
    try:
        pending = w.session_of(bob, alice, state="pending")
        assert pending["waiting_for"] and "moderator" in pending["join_modes"]
        assert all(s["owner"] != alice.name for s in w.sessions(carl))  # may not join: unseen
        moderator = w.popen(bob, "join", pending["id"], "--mode=moderator")
        try:
            read_until(owner, "started")
            read_until(moderator, "started")  # the moderator sees the session's output
            live = w.session_of(bob, alice, state="running")
            assert {"user": bob.name, "mode": "moderator"}.items() <= {
                **next(p for p in live["participants"] if p["user"] == bob.name)
            }.items()
            moderator.send_signal(signal.SIGTERM)  # the only moderator leaves
            out, err = owner.communicate(timeout=15)
        finally:
            stop(moderator)  # type: ignore[arg-type]
        assert b"done" not in out and owner.returncode != 0
        assert b"moderator" in err and b"waiting for" in err
    finally:
        stop(owner)  # type: ignore[arg-type]
    sid = pending["id"]

    def events() -> dict[str, dict[str, Any]] | None:
        found = {
            e["type"]: e for e in w.env.events("--type", "session.*") if e["session_id"] == sid
        }
        return found if "session.end" in found else None

    found: dict[str, dict[str, Any]] = wait_for(events, "session.end")
    for kind in ("session.join", "session.leave"):
        assert found[kind]["fields"]["participant"] == bob.name
        assert found[kind]["fields"]["mode"] == "moderator"
    assert bob.name in found["session.end"]["fields"]["participants"]


def test_an_observer_cannot_type_and_a_peer_can(world: World) -> None:
    w = world
    carl, bob = w.user("carl", "dev"), w.user("bob", "mod")
    pat, alice = w.user("pat", "peer"), w.user("alice", "prod")
    ann = carl  # the owner; alice may join nobody's sessions
    owner = w.popen(ann, "ssh", f"{LOGIN}@{w.node}", "echo started; cat")
    joined: list[subprocess.Popen[bytes]] = []
    try:
        read_until(owner, "started")  # not moderated: runs at once
        live = w.session_of(bob, ann)
        assert all(s["owner"] != ann.name for s in w.sessions(alice))
        observer = w.popen(bob, "join", live["id"], "--mode=observer")
        joined.append(observer)
        peer = w.popen(pat, "join", live["id"], "--mode=peer")
        joined.append(peer)
        wait_for(lambda: len(w.session_of(bob, ann)["participants"]) == 3, "both joined")
        typed(observer, "from-observer")
        typed(peer, "from-peer")
        seen = read_until(owner, "from-peer")
        assert "from-observer" not in seen
        read_until(observer, "from-peer")  # and the observer sees what the peer typed
        refused = w.env.bsh(alice, "join", live["id"], "--mode=observer")
        assert refused.returncode != 0 and "not found" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        for proc in [owner, *joined]:
            stop(proc)  # type: ignore[arg-type]
