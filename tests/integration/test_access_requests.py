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
from harness import BIN, Env, User, login_via_proxy, start_node, stop, unique, wait_for, wait_node

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
            self.users[who] = self.env.new_user(roles, via_proxy=True)
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
            wait_node(env, name)
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


def test_bsh_ssh_offers_then_creates_the_request_and_connects(world: World) -> None:
    w = world
    fay = w.user("fay", w.req)
    bob, carol = w.user("bob", w.rev), w.user("carol", w.rev)
    refused = _ssh(w, fay, w.other)  # type: ignore[attr-defined]
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"bsh request create --resource=node/{w.other} --reason=" in refused.stderr  # type: ignore[attr-defined]
    nowhere = _ssh(w, fay, "no-such-node")
    assert nowhere.returncode != 0 and "bsh request create" not in nowhere.stderr
    home_env = {**os.environ, "BSH_HOME": str(fay.home), "NO_COLOR": "1"}
    other: str = w.other  # type: ignore[attr-defined]
    argv = [str(BIN / "bsh"), "ssh", "--request", "--reason=INC-7", f"{LOGIN}@{other}", "echo hi"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=home_env,
    )  # fmt: skip
    try:
        pending: list[str] = []

        def created() -> bool:
            out = _ok(w.env.bsh(bob, "request", "ls", "--state=pending", "--format", "json"))
            items = json.loads(out)
            items = items.get("items", items) if isinstance(items, dict) else items
            pending[:] = [
                r["id"] for r in items if r["user"] == fay.name and r["reason"] == "INC-7"
            ]
            return bool(pending)

        wait_for(created, "the request bsh ssh --request created")
        for reviewer in (bob, carol):
            _ok(_review(w, reviewer, pending[0], "approve"))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "hi" in out and pending[0] in err


def test_on_call_requester_is_approved_automatically_by_the_daemon(tmp_path: Path) -> None:
    """A real daemon with an on-call rule over a weekly iCalendar rotation."""
    from datetime import UTC, datetime, timedelta

    from harness import start_cluster

    monday = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    monday -= timedelta(days=monday.weekday() + 7)
    stamp = monday.strftime("%Y%m%dT%H%M%SZ")
    ends = (monday + timedelta(days=7)).strftime("%Y%m%dT%H%M%SZ")
    calendar = tmp_path / "oncall.ics"  # written once the user exists (read per request)
    config = tmp_path / "bastion.yaml"
    config.write_text(
        "auth_service:\n  notifications:\n    on_call:\n"
        f"      - {{name: dba-on-call, schedule: '{calendar}', roles: [dba]}}\n"
    )
    cluster = start_cluster(tmp_path, "-c", str(config), name="oncall.local")
    try:
        env = Env(cluster, tmp_path / "homes")
        env.admin_ok(
            "create", "-f", "-",
            input="kind: role\nmetadata: {name: dba}\nspec: {allow: {logins: [x]}}\n---\n"
            "kind: role\nmetadata: {name: asker}\nspec:\n  allow:\n"
            "    request: {roles: [dba], max_duration: 30m, thresholds: [{approve: 2}]}\n",
        )  # fmt: skip
        user = env.new_user("asker", via_proxy=True)
        calendar.write_text(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bastion//test//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:dba\r\nDTSTAMP:{stamp}\r\nDTSTART:{stamp}\r\nDTEND:{ends}\r\n"
            f"RRULE:FREQ=WEEKLY\r\nSUMMARY:DBA on call: {user.name}\r\nEND:VEVENT\r\n"
            "END:VCALENDAR\r\n"
        )
        out = _ok(env.bsh(user, "request", "create", "--roles=dba", "--duration=8h",
                          "--reason=INC-2", "--format", "json"))  # fmt: skip
        created = json.loads(out)
        assert created["state"] == "APPROVED"
        [review] = created["reviews"]
        assert review["author"] == "dba-on-call" and review["automatic"] is True
        expires = datetime.fromisoformat(created["access_expires"])
        assert expires - datetime.fromisoformat(created["created"]) <= timedelta(minutes=30)
        [event] = [
            e for e in env.events("--type", "access_request.review")
            if e.get("target") == f"access_request/{created['id']}"
        ]  # fmt: skip
        assert event["user"] == "dba-on-call"
        assert str(calendar) in json.dumps(event)
    finally:
        cluster.stop()


def test_web_pages_create_and_review_a_request(world: World) -> None:
    """Playwright: ask on /web/requests, review through the notice's approve link, see it
    approved; values are text, never markup; no inline script runs."""
    from browser import chromium_browser, sign_in
    from playwright.sync_api import expect

    w = world
    gina = w.user("gina", w.req)
    bob, carol = w.user("bob", w.rev), w.user("carol", w.rev)
    base = f"https://{w.env.cluster.proxy}"
    with chromium_browser() as browser:
        pages = {}
        errors: list[str] = []
        for who in (gina, bob, carol):
            page = browser.new_context(ignore_https_errors=True).new_page()
            sign_in(page, base, who)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            pages[who.name] = page
        page = pages[gina.name]
        page.goto(f"{base}/web/requests")
        page.fill("#request-roles", w.ops)
        page.fill("#request-reason", "<i>INC-9</i>")
        page.click("form[action='/web/requests'] button[type=submit]")
        expect(page.locator(".notice.ok")).to_contain_text("created (pending)")
        expect(page.locator("#request")).to_contain_text("<i>INC-9</i>")  # text, not markup
        rid = page.url.split("/web/requests/")[1].split("?")[0]
        for reviewer, state in ((bob, "pending"), (carol, "approved")):
            review = pages[reviewer.name]
            review.goto(f"{base}/web/requests")
            expect(review.locator("#to-review")).to_contain_text(rid[:8])
            review.goto(f"{base}/web/requests/{rid}?review=approve")  # the Slack/email link
            expect(review.locator("#verdict-approve")).to_be_checked()
            review.fill("#review-reason", "checked")
            review.click("form[aria-label=Review] button[type=submit]")
            expect(review.locator(".notice.ok")).to_contain_text(f"the request is {state}")
        page.goto(f"{base}/web/requests/{rid}")
        expect(page.locator("#assume")).to_contain_text(f"bsh login --request-id={rid}")
        expect(page.locator("form[aria-label=Review]")).to_have_count(0)  # never one's own
        assert page.locator("script:not([src])").count() == 0
        assert not [e for e in errors if "Content Security Policy" in e], errors
    reviews = [e for e in w.env.events("--type", "access_request.review")]
    assert {e["user"] for e in reviews if e.get("target") == f"access_request/{rid}"} == {
        bob.name,
        carol.name,
    }
