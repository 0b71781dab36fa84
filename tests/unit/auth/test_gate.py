"""The authentication gate's decision (pure) and its IO shell over a memory backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit.log import AuditQuery
from bastion.auth.gate import AUDIENCE_KINDS, Gate, has_user_record, refusal
from bastion.errors import AccessDenied, AuthenticationFailed, NotFound
from bastion.locks.matcher import LockDecision, Locked, LockView, decide, identity_targets
from bastion.testing import make_auth
from bastion.types.access import Lock, LockSpec, LockTarget, User, UserSpec
from bastion.types.identity import Identity, RouteToTarget
from bastion.types.meta import Metadata

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ALLOWED = LockDecision(True)


def ident(**update: object) -> Identity:
    base = Identity(
        cluster="c",
        user="alice",
        roles=("access",),
        logins=("alice",),
        expires=NOW + timedelta(hours=1),
        user_epoch="e1",
    )
    return base.model_copy(update=update)


def user(epoch: str = "e1") -> User:
    return User(metadata=Metadata(name="alice"), spec=UserSpec(roles=["access"], epoch=epoch))


def test_a_current_user_passes_on_user_and_any_routes_not_on_host_routes() -> None:
    assert refusal(ident(), "user", user(), ALLOWED) is None
    assert refusal(ident(), "any", user(), ALLOWED) is None
    found = refusal(ident(), "host", user(), ALLOWED)
    assert found is not None and isinstance(found.error, AccessDenied)
    assert "for agents" in found.error.message


def test_a_host_passes_only_host_and_any_routes() -> None:
    host = ident(kind="host", user="h1", host_id="h1", user_epoch="")
    assert not has_user_record(host)
    assert refusal(host, "host", None, ALLOWED) is None
    assert refusal(host, "any", None, ALLOWED) is None
    for audience in ("user", "web"):
        found = refusal(host, audience, None, ALLOWED)
        assert found is not None and "host identity" in found.reason


def test_a_deleted_user_and_a_stale_epoch_are_refused_with_log_in_again() -> None:
    gone = refusal(ident(), "user", None, ALLOWED)
    assert gone is not None and "no longer exists" in gone.reason
    assert isinstance(gone.error, AuthenticationFailed) and "log in again" in gone.error.message
    stale = refusal(ident(), "user", user(epoch="e2"), ALLOWED)
    assert stale is not None and "stale user epoch" in stale.reason


def test_sso_users_and_the_local_admin_have_no_record_to_check() -> None:
    sso = ident(user="okta:alice", traits={"sso_connector": ("okta",)}, user_epoch="")
    admin = ident(kind="admin", user="bastion-admin", user_epoch="")
    for identity in (sso, admin):
        assert not has_user_record(identity)
        assert refusal(identity, "user", None, ALLOWED) is None


def test_a_per_session_mfa_certificate_is_refused_everywhere_but_the_ssh_route() -> None:
    session = ident(
        mfa_verified=True, mfa_scope="session:web1:root", route=RouteToTarget(node="web1")
    )
    for audience in set(AUDIENCE_KINDS) - {"ssh"}:
        found = refusal(session, audience, user(), ALLOWED)
        assert found is not None and "valid only for its node and login" in found.error.message
    assert refusal(session, "ssh", user(), ALLOWED) is None  # the route checks its target


def test_a_lock_refuses_with_its_message() -> None:
    lock = Lock(
        metadata=Metadata(name="l1"),
        spec=LockSpec(target=LockTarget(user="alice"), message="laptop stolen"),
    )
    decision = decide(LockView((lock,), True, NOW), identity_targets(ident()), "best_effort", NOW)
    found = refusal(ident(), "user", user(), decision)
    assert found is not None and isinstance(found.error, Locked)
    assert "laptop stolen" in found.error.message


_names = st.sampled_from(["alice", "bob", "root", "dev", "access", "d1", "web1", "r1"])
_targets = st.builds(
    LockTarget,
    user=st.one_of(st.just(""), _names),
    role=st.one_of(st.just(""), _names),
    login=st.one_of(st.just(""), _names),
    device=st.one_of(st.just(""), _names),
    mfa_device=st.one_of(st.just(""), _names),
    access_request=st.one_of(st.just(""), _names),
    bot=st.one_of(st.just(""), _names),
    user_epoch=st.one_of(st.just(""), st.sampled_from(["e1", "e2"])),
).filter(lambda t: not t.is_empty())
_identities = st.builds(
    lambda name, roles, kind, device, mfa, reqs, epoch: ident(
        user=name,
        roles=tuple(roles),
        kind=kind,
        device_id=device,
        mfa_device=mfa,
        access_requests=tuple(reqs),
        user_epoch=epoch,
    ),
    _names,
    st.lists(_names, max_size=3),
    st.sampled_from(["user", "bot", "admin"]),
    st.one_of(st.just(""), _names),
    st.one_of(st.just(""), _names),
    st.lists(_names, max_size=2),
    st.sampled_from(["e1", "e2"]),
)


@given(_identities, st.lists(_targets, max_size=4), st.sampled_from(["e1", "e2"]))
def test_property_a_matching_lock_always_refuses(
    identity: Identity, targets: list[LockTarget], stored_epoch: str
) -> None:
    locks = tuple(
        Lock(metadata=Metadata(name=f"l{i}"), spec=LockSpec(target=t))
        for i, t in enumerate(targets)
    )
    view = LockView(locks, True, NOW)
    decision = decide(view, identity_targets(identity), "best_effort", NOW)
    record = User(metadata=Metadata(name=identity.user), spec=UserSpec(epoch=stored_epoch))
    found = refusal(identity, "user", record, decision)
    t = identity_targets(identity)
    matching = [
        lk
        for lk in targets
        if all(
            (not want) or ok
            for want, ok in (
                (lk.user, lk.user == t.user),
                (lk.role, lk.role in t.roles),
                (lk.login, lk.login == t.login),
                (lk.device, lk.device == t.device),
                (lk.mfa_device, lk.mfa_device == t.mfa_device),
                (lk.access_request, lk.access_request in t.access_requests),
                (lk.bot, lk.bot == t.bot),
                (lk.user_epoch, lk.user_epoch == t.user_epoch),
            )
        )
    ]
    if matching:
        assert found is not None
    epoch_ok = not has_user_record(identity) or stored_epoch == identity.user_epoch
    if not matching and epoch_ok:
        assert found is None


async def test_the_gate_reads_the_user_and_the_locks_and_audits_each_refusal_once() -> None:
    fx = await make_auth()
    await fx.users.add_user("alice", ["access"], ["alice"], {}, "admin")
    stored = await fx.auth.users.get("alice")
    gate = Gate.for_auth(fx.auth)
    good = ident(user_epoch=stored.spec.epoch, expires=fx.clock.now() + timedelta(hours=1))
    await gate.admit(good, "user", "GET /v1/whoami", "10.0.0.1")
    with pytest.raises(AuthenticationFailed):
        await gate.admit(good.model_copy(update={"user_epoch": "old"}), "user", "GET /x", "1.2.3.4")
    denied = await fx.auth.audit.search(AuditQuery(types=("access.denied",)))
    assert len(denied) == 1 and denied[0].target == "GET /x"
    assert denied[0].remote_addr == "1.2.3.4" and "stale user epoch" in (denied[0].reason or "")


# ---- the gate on small protocols (a proxy in its own process passes its caches) ----------------


class _Users:
    def __init__(self, *users: User) -> None:
        self.users = {u.name: u for u in users}
        self.asked = 0

    async def get(self, name: str) -> User:
        self.asked += 1
        if name not in self.users:
            raise NotFound(f"user {name!r} not found")
        return self.users[name]


class _NoLocks:
    async def lock_access(self, identity: Identity, targets: object) -> LockDecision:
        return LockDecision(True)


class _Events:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict[str, object]]] = []

    async def emit(self, event_type: str, *, outcome: str = "success", **fields: object) -> None:
        self.emitted.append((event_type, {"outcome": outcome, **fields}))


def _stored(name: str, epoch: str) -> User:
    return User(metadata=Metadata(name=name), spec=UserSpec(roles=["access"], epoch=epoch))


async def test_a_lagging_cache_is_rechecked_before_refusing() -> None:
    who = ident(user="new", user_epoch="e2")
    cache, auth = _Users(_stored("new", "e1")), _Users(_stored("new", "e2"))
    events = _Events()
    gate = Gate(cache, _NoLocks(), events, recheck=auth)
    assert await gate.refusal(who, "ssh") is None  # the cache had the old epoch: auth decides
    assert auth.asked == 1
    assert await Gate(_Users(), _NoLocks(), events, recheck=auth).refusal(who, "ssh") is None
    # without a recheck the cache's word is final; a user auth does not know is refused
    with pytest.raises(AuthenticationFailed):
        await Gate(cache, _NoLocks(), events).admit(who, "ssh", "ssh", "192.0.2.1:5")
    with pytest.raises(AuthenticationFailed):
        await Gate(_Users(), _NoLocks(), events, recheck=_Users()).admit(
            who, "ssh", "ssh", "192.0.2.1:5"
        )
    assert [e for e, _ in events.emitted] == ["access.denied", "access.denied"]


async def test_a_current_cache_is_not_rechecked() -> None:
    auth = _Users()
    gate = Gate(_Users(_stored("u", "e1")), _NoLocks(), _Events(), recheck=auth)
    assert await gate.refusal(ident(user="u", user_epoch="e1"), "user") is None
    assert auth.asked == 0
