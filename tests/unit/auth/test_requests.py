"""The access request service over a memory backend: create, review, resolve, drop, assume."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.auth.guarded import GuardedAuth
from bastion.auth.requests import AccessRequestService, GuardedRequests, NewRequest
from bastion.ca.x509 import identity_from_certificate
from bastion.errors import AccessDenied, BadParameter, NotFound
from bastion.rbac.requests import RequestRefused, ReviewRefused
from bastion.testing import AuthFixture, make_auth, new_public_key
from bastion.types.access import Lock, LockSpec, LockTarget, Role, User
from bastion.types.database import Database, DatabaseSpec
from bastion.types.identity import Identity
from bastion.types.inventory import Node, NodeSpec
from bastion.types.meta import Metadata


def _role(name: str, **allow: Any) -> Role:
    return Role.model_validate({"metadata": {"name": name}, "spec": {"allow": allow}})


ROLES = [
    _role(
        "requester",
        logins=["alice"],
        node_labels={"env": "dev"},
        request={
            "roles": ["dba"],
            "search_as_roles": ["prod-access", "prod-db"],
            "thresholds": [{"approve": 2, "deny": 1}],
            "max_duration": "2h",
        },
    ),
    _role("dba", logins=["postgres"], node_labels={"env": "prod"}),
    _role("prod-access", logins=["root"], node_labels={"env": "prod"}),
    _role("prod-db", db_labels={"env": "prod"}, db_users=["reader"], db_names=["orders"]),
    _role("reviewer", review_requests={"roles": ["dba", "prod-access", "prod-db"]}),
]


async def _world() -> tuple[AuthFixture, AccessRequestService]:
    f = await make_auth()
    for role in ROLES:
        await f.auth.create_resource(role, "admin", force=False)
    for name, roles in [("alice", ["requester"]), ("bob", ["reviewer"]), ("carol", ["reviewer"])]:
        user = User(metadata=Metadata(name=name), spec={"roles": roles, "traits": {}})
        await f.auth.create_resource(user, "admin", force=False)
    for name, env in [("db7", "prod"), ("db8", "prod")]:
        node = Node(metadata=Metadata(name=name, labels={"env": env}), spec=NodeSpec(addr="x:22"))
        await f.auth.create_resource(node, "admin", force=False)
    for name in ("orders", "billing"):
        db = Database(
            metadata=Metadata(name=name, labels={"env": "prod"}),
            spec=DatabaseSpec(uri="127.0.0.1:5432"),
        )
        await f.auth.create_resource(db, "admin", force=False)
    return f, AccessRequestService(f.auth)


def _identity(f: AuthFixture, user: str, roles: tuple[str, ...], **kw: Any) -> Identity:
    return Identity(
        cluster="test.local",
        user=user,
        roles=roles,
        expires=f.clock.now() + timedelta(hours=12),
        **kw,
    )


async def _guarded(f: AuthFixture, svc: AccessRequestService, ident: Identity) -> GuardedRequests:
    from bastion.auth.users import UserService

    guard = await GuardedAuth.for_identity(f.auth, UserService(f.auth), ident, "127.0.0.1")
    return GuardedRequests(guard, svc)


async def _approved(f: AuthFixture, svc: AccessRequestService, **kw: Any) -> str:
    req = await svc.create("alice", NewRequest(**({"roles": ("dba",)} | kw)))
    for reviewer in ("bob", "carol"):
        await svc.review(req.name, _identity(f, reviewer, ("reviewer",)), "approve", "ok")
    return req.name


async def test_two_approvals_then_assume_gives_a_certificate_with_the_request() -> None:
    f, svc = await _world()
    req = await svc.create("alice", NewRequest(roles=("dba",), reason="INC-1"))
    assert req.spec.state == "PENDING"
    after = await svc.review(req.name, _identity(f, "bob", ("reviewer",)), "approve", "ok")
    assert after.spec.state == "PENDING"
    after = await svc.review(req.name, _identity(f, "carol", ("reviewer",)), "approve", "ok")
    assert after.spec.state == "APPROVED"
    _, pub = new_public_key()
    caller = _identity(f, "alice", ("requester",))
    certs = await svc.assume(req.name, caller, pub, timedelta(hours=12), "127.0.0.1")
    ident = certs.identity
    assert ident.access_requests == (req.name,)
    assert set(ident.roles) == {"requester", "dba"}
    assert "postgres" in ident.logins
    assert ident.expires <= req.spec.access_expires
    from cryptography import x509

    parsed = identity_from_certificate(x509.load_pem_x509_certificate(certs.tls_cert.encode()))
    assert parsed.access_requests == (req.name,)
    types = [e.type for e in await f.auth.audit.read_from(0, 10_000)]
    for t in ("access_request.create", "access_request.review", "access_request.assume"):
        assert t in types


async def test_deny_wins_and_self_review_is_refused() -> None:
    f, svc = await _world()
    req = await svc.create("alice", NewRequest(roles=("dba",)))
    with pytest.raises(ReviewRefused, match="own"):
        await svc.review(req.name, _identity(f, "alice", ("requester",)), "approve", "")
    await svc.review(req.name, _identity(f, "bob", ("reviewer",)), "approve", "")
    denied = await svc.review(req.name, _identity(f, "carol", ("reviewer",)), "deny", "no")
    assert denied.spec.state == "DENIED"
    with pytest.raises(AccessDenied, match="denied"):
        _, pub = new_public_key()
        await svc.assume(req.name, _identity(f, "alice", ("requester",)), pub, timedelta(1), "")
    failures = [e for e in await f.auth.audit.read_from(0, 10_000) if e.outcome == "failure"]
    assert any(e.type == "access_request.review" for e in failures)


async def test_a_reviewer_without_rights_is_refused() -> None:
    f, svc = await _world()
    req = await svc.create("alice", NewRequest(roles=("dba",)))
    with pytest.raises(ReviewRefused, match="may not review"):
        await svc.review(req.name, _identity(f, "eve", ("requester",)), "approve", "")


async def test_requests_for_roles_not_allowed_are_refused() -> None:
    f, svc = await _world()
    with pytest.raises(RequestRefused):
        await svc.create("alice", NewRequest(roles=("reviewer",)))
    with pytest.raises(BadParameter):
        await svc.create("alice", NewRequest(resources=("pod/x",)))
    with pytest.raises(RequestRefused, match="db 'x' not found"):
        await svc.create("alice", NewRequest(resources=("db/x",)))
    with pytest.raises(RequestRefused, match="not found"):
        await svc.create("alice", NewRequest(resources=("node/nope",)))


async def test_expired_requests_give_no_access() -> None:
    f, svc = await _world()
    name = await _approved(f, svc)
    f.clock.advance(timedelta(hours=3).total_seconds())
    _, pub = new_public_key()
    with pytest.raises(AccessDenied, match="expired"):
        await svc.assume(name, _identity(f, "alice", ("requester",)), pub, timedelta(1), "")
    pending = await svc.create("alice", NewRequest(roles=("dba",)))
    f.clock.advance(timedelta(hours=1).total_seconds())
    with pytest.raises(ReviewRefused, match="expired"):
        await svc.review(pending.name, _identity(f, "bob", ("reviewer",)), "approve", "")


async def test_resource_request_grants_exactly_the_node() -> None:
    f, svc = await _world()
    name = await _approved(f, svc, roles=(), resources=("node/db7",))
    request = await svc.get(name)
    assert request.spec.roles == ["prod-access"]
    _, pub = new_public_key()
    caller = _identity(f, "alice", ("requester",))
    certs = await svc.assume(name, caller, pub, timedelta(hours=1), "")
    assert certs.identity.allowed_resources == ("node/db7",)
    from bastion.rbac.checker import RoleSet

    roles = [await f.auth.roles.get(r) for r in certs.identity.roles]
    rs = RoleSet.from_roles(roles, {}, certs.identity.allowed_resources)
    assert rs.check_node_access("db7", {"env": "prod"}, "root").allowed
    assert not rs.check_node_access("db8", {"env": "prod"}, "root").allowed
    assert not rs.check_node_visible("db8", {"env": "prod"}).allowed


async def test_resource_request_grants_exactly_the_database() -> None:
    f, svc = await _world()
    svc_guarded = await _guarded(f, svc, _identity(f, "alice", ("requester",)))
    assert await svc_guarded.requestable("db/orders") == ["prod-db"]
    name = await _approved(f, svc, roles=(), resources=("db/orders",))
    request = await svc.get(name)
    assert request.spec.roles == ["prod-db"]
    _, pub = new_public_key()
    certs = await svc.assume(name, _identity(f, "alice", ("requester",)), pub, timedelta(1), "")
    assert certs.identity.allowed_resources == ("db/orders",)
    assert certs.identity.access_requests == (name,)
    from bastion.rbac.checker import RoleSet

    roles = [await f.auth.roles.get(r) for r in certs.identity.roles]
    rs = RoleSet.from_roles(roles, {}, certs.identity.allowed_resources)
    prod = {"env": "prod"}
    assert rs.check_db_access(prod, "reader", "orders", db_service="orders").allowed
    assert not rs.check_db_access(prod, "admin", "orders", db_service="orders").allowed
    assert not rs.check_db_access(prod, "reader", "orders", db_service="billing").allowed
    # the requester's own node access is limited to the request too
    assert not rs.check_node_access("dev1", {"env": "dev"}, "alice").allowed


async def test_assume_is_refused_to_others_and_when_locked() -> None:
    f, svc = await _world()
    name = await _approved(f, svc)
    _, pub = new_public_key()
    with pytest.raises(AccessDenied, match="not yours"):
        await svc.assume(name, _identity(f, "bob", ("reviewer",)), pub, timedelta(1), "")
    lock = Lock(metadata=Metadata(name="l"), spec=LockSpec(target=LockTarget(access_request=name)))
    await f.auth.create_resource(lock, "admin", force=False)
    with pytest.raises(AccessDenied):
        await svc.assume(name, _identity(f, "alice", ("requester",)), pub, timedelta(1), "")


async def test_guarded_visibility_resolve_and_drop() -> None:
    f, svc = await _world()
    req = await svc.create("alice", NewRequest(roles=("dba",)))
    outsider = await _guarded(f, svc, _identity(f, "dave", ("requester",)))
    assert await outsider.list() == []
    with pytest.raises(NotFound):
        await outsider.get(req.name)
    with pytest.raises(NotFound):
        await outsider.delete(req.name)
    reviewer = await _guarded(f, svc, _identity(f, "bob", ("reviewer",)))
    assert [r.name for r in await reviewer.list()] == [req.name]
    admin = await _guarded(f, svc, _identity(f, "root", ("editor",), kind="admin"))
    resolved = await admin.review(req.name, "approve", "break-glass")
    assert resolved.spec.state == "APPROVED"
    assert [r.name for r in await admin.list(state="approved")] == [req.name]
    owner = await _guarded(f, svc, _identity(f, "alice", ("requester",)))
    await owner.delete(req.name)
    with pytest.raises(NotFound):
        await svc.get(req.name)


async def test_expired_requests_are_listed_as_expired() -> None:
    f, svc = await _world()
    await svc.create("alice", NewRequest(roles=("dba",)))
    f.clock.advance(timedelta(hours=1, seconds=1).total_seconds())
    owner = await _guarded(f, svc, _identity(f, "alice", ("requester",)))
    assert [r.spec.state for r in await owner.list()] == ["EXPIRED"]


async def test_on_call_requester_is_approved_automatically_and_audited(tmp_path: Path) -> None:
    from bastion.config.notifications import OnCallRule

    f, _ = await _world()
    now = f.clock.now()
    rotation = tmp_path / "dba.yaml"
    rotation.write_text(
        f"shifts:\n  - {{user: alice, start: '{(now - timedelta(hours=1)).isoformat()}', "
        f"end: '{(now + timedelta(hours=1)).isoformat()}'}}\n"
    )
    rule = OnCallRule(name="dba-on-call", schedule=str(rotation), roles=["dba"])
    svc = AccessRequestService(f.auth, on_call=[rule])
    req = await svc.create("alice", NewRequest(roles=("dba",), duration=timedelta(hours=9)))
    assert req.spec.state == "APPROVED"
    [review] = req.spec.reviews
    assert (review.author, review.automatic) == ("dba-on-call", True)
    assert str(rotation) in review.reason
    assert req.spec.access_expires - now <= timedelta(hours=2)  # max_duration still bounds it
    events = [e for e in await f.auth.audit.read_from(0, 10_000) if e.type.endswith(".review")]
    assert events[-1].user == "dba-on-call" and events[-1].fields["automatic"] is True
    assert events[-1].fields["schedule"] == str(rotation)
    # a role no rule covers, or off-shift: people review
    assert (await svc.create("alice", NewRequest(resources=("node/db7",)))).spec.state == "PENDING"
    f.clock.advance(timedelta(hours=2).total_seconds())
    assert (await svc.create("alice", NewRequest(roles=("dba",)))).spec.state == "PENDING"
    # an unreadable schedule approves nothing
    broken = AccessRequestService(f.auth, on_call=[rule.model_copy(update={"schedule": "/no.ics"})])
    assert (await broken.create("alice", NewRequest(roles=("dba",)))).spec.state == "PENDING"


async def test_requestable_names_the_search_roles_or_hides_the_node() -> None:
    f, svc = await _world()
    alice = await _guarded(f, svc, _identity(f, "alice", ("requester",)))
    assert await alice.requestable("node/db7") == ["prod-access"]
    for missing in ("node/nope", "node/db9"):
        with pytest.raises(NotFound, match="not among the resources you may request"):
            await alice.requestable(missing)
    with pytest.raises(BadParameter):
        await alice.requestable("pod/x")
    with pytest.raises(NotFound):
        await alice.requestable("db/x")
    bob = await _guarded(f, svc, _identity(f, "bob", ("reviewer",)))
    with pytest.raises(NotFound):
        await bob.requestable("node/db7")  # bob has no search_as_roles
    req = await svc.create("alice", NewRequest(roles=("dba",)))
    assert await bob.may_review(req) and not await alice.may_review(req)
