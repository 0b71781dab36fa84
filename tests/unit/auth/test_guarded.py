from datetime import timedelta

import pytest

from bastion.audit.log import AuditQuery
from bastion.auth.guarded import GuardedAuth
from bastion.errors import AccessDenied, BadParameter, NotFound
from bastion.testing import make_auth
from bastion.types import Identity, Metadata, Node
from bastion.types.inventory import NodeSpec


def identity(fx, user, roles, logins=()):
    return Identity(
        cluster="test.local",
        user=user,
        roles=tuple(roles),
        logins=tuple(logins),
        traits={"logins": tuple(logins)},
        expires=fx.clock.now() + timedelta(hours=1),
    )


async def guard(fx, user, roles, logins=()):
    return await GuardedAuth.for_identity(
        fx.auth, fx.users, identity(fx, user, roles, logins), "10.1.1.1"
    )


async def test_editor_may_manage_users_access_may_not_and_refusal_is_audited():
    fx = await make_auth()
    editor = await guard(fx, "ed", ["editor"])
    invite = await editor.add_user("carol", ["access"], ["carol"], {})
    assert invite.user == "carol"
    plain = await guard(fx, "bob", ["access"], ["bob"])
    with pytest.raises(AccessDenied, match="may not create user"):
        await plain.add_user("mallory", ["editor"], [], {})
    denied = await fx.auth.audit.search(AuditQuery(types=("access.denied",)))
    assert denied[-1].user == "bob" and denied[-1].remote_addr == "10.1.1.1"
    assert denied[-1].reason and denied[-1].fields["verb"] == "create"


async def test_node_list_is_filtered_per_item():
    fx = await make_auth()
    for name, env in (("web1", "prod"), ("dev1", "dev")):
        await fx.auth.nodes.create(
            Node(metadata=Metadata(name=name, labels={"env": env}), spec=NodeSpec(hostname=name))
        )
    role_yaml = __import__("bastion.types", fromlist=["x"]).load_resources(
        "kind: role\nmetadata: {name: devs}\nspec:\n  allow:\n    logins: [dev]\n"
        "    node_labels: {env: dev}\n    rules: [{resources: [node], verbs: [list, read]}]\n"
    )[0]
    await fx.auth.create_resource(role_yaml, "admin", force=False)
    dev = await guard(fx, "dana", ["devs"], ["dev"])
    assert [n.name for n in await dev.list_resources("node")] == ["dev1"]
    with pytest.raises(NotFound):
        await dev.get_resource("node", "web1")  # invisible, same as absent


async def test_ca_secrets_never_leave_through_the_guard():
    fx = await make_auth()
    editor = await guard(fx, "ed", ["editor"])
    for ca in await editor.list_resources("cert_authority"):
        assert all(not k.private_key_encrypted for k in ca.spec.trusted_keys())


async def test_deleted_role_grants_nothing():
    fx = await make_auth()
    g = await guard(fx, "ghost", ["removed-role"])
    with pytest.raises(AccessDenied):
        await g.list_resources("role")


async def test_unknown_ca_type():
    fx = await make_auth()
    editor = await guard(fx, "ed", ["editor"])
    with pytest.raises(BadParameter, match="unknown CA type"):
        await editor.export_ca("bogus", "")
    assert (await editor.export_ca("host", "")).startswith("@cert-authority")


async def test_auditor_reads_events_but_cannot_change_roles():
    fx = await make_auth()
    auditor = await guard(fx, "audrey", ["auditor"])
    assert isinstance(await auditor.search_events(AuditQuery()), list)
    with pytest.raises(AccessDenied):
        await auditor.delete_resource("role", "access")


async def host_guard(fx, name, role="node"):
    from bastion.testing import new_public_key

    token = await fx.auth.add_token([role], timedelta(minutes=5), {}, "admin")
    _, pub = new_public_key()
    certs = await fx.auth.join(token.token, name, role, pub, [], [], "10.0.0.9")
    return await GuardedAuth.for_identity(fx.auth, fx.users, certs.identity, "10.0.0.9")


def node(name):
    return Node(metadata=Metadata(name=name, labels={"env": "dev"}), spec=NodeSpec(hostname=name))


async def test_node_heartbeat_is_bound_to_its_certificate():
    fx = await make_auth()
    web = await host_guard(fx, "web1")
    stored = await web.heartbeat_node(node("web1"))
    assert stored.spec.host_id == web.ctx.identity.host_id
    assert stored.metadata.expires is not None
    with pytest.raises(AccessDenied, match="is for node 'web1', not 'db1'"):
        await web.heartbeat_node(node("db1"))
    refused = await fx.auth.audit.search(AuditQuery(types=("node.rejected",)))
    assert refused and refused[-1].remote_addr == "10.0.0.9"


async def test_a_second_host_cannot_take_a_live_node_name():
    fx = await make_auth()
    first = await host_guard(fx, "web1")
    await first.heartbeat_node(node("web1"))
    from bastion.testing import new_public_key

    token = await fx.auth.add_token(["node"], timedelta(minutes=5), {}, "admin")
    with pytest.raises(AccessDenied, match="already in use"):
        await fx.auth.join(token.token, "web1", "node", new_public_key()[1], [], [], "6.6.6.6")


async def test_hosts_get_system_permissions_only():
    fx = await make_auth()
    # a user-defined role named like a join role must not widen what hosts may do
    evil = __import__("bastion.types", fromlist=["x"]).load_resources(
        "kind: role\nmetadata: {name: node}\nspec:\n  allow:\n"
        "    rules: [{resources: ['*'], verbs: ['*']}]\n"
    )[0]
    await fx.auth.create_resource(evil, "admin", force=False)
    web = await host_guard(fx, "web1")
    assert [r.name for r in await web.list_resources("role")]
    with pytest.raises(AccessDenied):
        await web.add_user("mallory", ["editor"], [], {})


async def test_agents_submit_only_agent_events():
    fx = await make_auth()
    web = await host_guard(fx, "web1")
    await web.submit_event(
        {"type": "session.start", "user": "alice", "login": "root", "fields": {"pty": True}}
    )
    events = await fx.auth.audit.search(AuditQuery(types=("session.start",)))
    assert events[-1].user == "alice" and events[-1].fields["emitted_by"] == web.ctx.identity.user
    with pytest.raises(BadParameter, match="may not submit"):
        await web.submit_event({"type": "user.login", "user": "alice"})


async def test_agent_event_batches_are_deduped_by_event_id_and_refused_per_event():
    fx = await make_auth()
    web = await host_guard(fx, "web1")
    db = await host_guard(fx, "db1")
    ids = [f"{i:032x}" for i in range(3)]
    batch = [
        {"type": "session.start", "user": "alice", "session_id": "s1", "event_id": ids[0]},
        {"type": "user.login", "user": "alice", "event_id": ids[1]},  # not an agent event
        {"type": "session.end", "user": "alice", "session_id": "s1", "event_id": ids[2]},
        {"type": "session.end", "user": {"bad": 1}, "event_id": "f" * 32},  # not storable
        {"type": "exec", "event_id": "NOT-HEX"},
    ]
    first = await web.submit_events(batch)
    assert [r["status"] for r in first] == ["stored", "rejected", "stored", "rejected", "rejected"]
    assert "may not submit" in first[1]["reason"] and "storable" in first[3]["reason"]
    assert "32 lowercase hex" in first[4]["reason"]
    again = await web.submit_events([batch[0], batch[2]])  # resent after a lost answer
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]
    assert [r["event_id"] for r in again] == [ids[0], ids[2]]
    other = await db.submit_events([batch[0]])  # ids are per node
    assert [r["status"] for r in other] == ["stored"]
    starts = await fx.auth.audit.search(AuditQuery(types=("session.*",)))
    assert [(e.type, e.fields["emitted_by"]) for e in starts] == [
        ("session.start", web.ctx.identity.user),
        ("session.end", web.ctx.identity.user),
        ("session.start", db.ctx.identity.user),
    ]
    refused = await fx.auth.audit.search(AuditQuery(types=("event.rejected",)))
    assert [e.fields["rejected_type"] for e in refused] == ["user.login", "session.end", "exec"]
    assert refused[0].outcome == "failure" and refused[0].user == web.ctx.identity.user


async def test_a_node_cannot_submit_events_about_another_node_or_as_a_proxy():
    """Security review: a (compromised) node forging session events for another node would
    plant records in the tamper-evident log and could satisfy another node's recording check."""
    fx = await make_auth()
    web = await host_guard(fx, "web1")
    proxy = await host_guard(fx, "proxy1", role="proxy")
    forged = [
        {"type": "session.end", "user": "alice", "session_id": "s1", "target": "db1"},
        {"type": "session.end", "user": "alice", "fields": {"target": "db1"}},
        {"type": "proxy.ssh", "user": "alice", "target": "db1"},
    ]
    results = await web.submit_events(forged)
    assert [r["status"] for r in results] == ["rejected"] * 3
    assert "about itself" in results[0]["reason"] and "about itself" in results[1]["reason"]
    assert "proxies" in results[2]["reason"]
    with pytest.raises(BadParameter, match="about itself"):
        await web.submit_event({"type": "exec", "user": "alice", "target": "db1"})
    ok = await web.submit_events(
        [
            {"type": "session.end", "user": "alice", "session_id": "s2", "target": "web1"},
            {"type": "exec", "user": "alice"},  # no target: it is the submitting node
        ]
    )
    assert [r["status"] for r in ok] == ["stored", "stored"]
    # a proxy reports routes to any node, but no node's own session events
    assert [r["status"] for r in await proxy.submit_events(forged[2:])] == ["stored"]
    assert [r["status"] for r in await proxy.submit_events(forged[:1])] == ["rejected"]
    stored = await fx.auth.audit.search(AuditQuery(types=("session.end", "exec")))
    assert [(e.type, e.target) for e in stored] == [("session.end", "web1"), ("exec", "web1")]


async def test_a_name_taken_over_after_expiry_stays_pinned_until_an_admin_confirms():
    from bastion.services.node_pins import NodePins

    fx = await make_auth()
    first = await host_guard(fx, "web1")
    await first.heartbeat_node(node("web1"))
    pins = NodePins(fx.backend)
    assert await pins.get("web1") == first.ctx.identity.host_id
    await fx.backend.delete(fx.auth.nodes.key("web1"))  # the record expired
    second = await host_guard(fx, "web1")  # another host joins under the name
    await second.heartbeat_node(node("web1"))
    assert await pins.get("web1") == first.ctx.identity.host_id  # the proxy refuses it
    editor = await guard(fx, "ed", ["editor"])
    answer = await editor.confirm_node("web1")
    assert answer["previous_host_id"] == first.ctx.identity.host_id
    assert await pins.get("web1") == answer["host_id"] == second.ctx.identity.host_id
    confirmed = await fx.auth.audit.search(AuditQuery(types=("node.confirm",)))
    assert confirmed[-1].user == "ed" and confirmed[-1].target == "node/web1"
    plain = await guard(fx, "bob", ["access"], ["bob"])
    with pytest.raises(AccessDenied):
        await plain.confirm_node("web1")


async def test_only_proxies_submit_database_session_events():
    """A proxy in its own process audits the database sessions it relays; a node may not."""
    fx = await make_auth()
    web = await host_guard(fx, "web1")
    proxy = await host_guard(fx, "proxy1", role="proxy")
    events = [
        {"type": f"db.session.{kind}", "user": "alice", "session_id": "d1", "db_service": "pg1"}
        for kind in ("start", "query", "end", "cancel")
    ]
    assert [r["status"] for r in await proxy.submit_events(events)] == ["stored"] * 4
    refused = await web.submit_events(events)
    assert [r["status"] for r in refused] == ["rejected"] * 4
    assert "only proxies" in refused[0]["reason"]
    stored = await fx.auth.audit.search(AuditQuery(types=("db.session.*",)))
    assert {e.fields["emitted_by"] for e in stored} == {proxy.ctx.identity.user}
