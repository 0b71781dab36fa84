"""A change and its audit event commit together, or neither does (issue 21).

Every public coroutine of AuthServer and UserService is classified below: either it changes
audited state (then a scenario drives it) or it does not (and says why). For every scenario and
every backend write it makes, a failure is injected before that write, and (separately) right
after it (the write is stored, then the process "dies"). After each run: no stored resource
without the event of its latest write, and no event whose write is not what is stored.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyotp
import pytest

from bastion.audit.log import PREFIX, index_of_key
from bastion.audit.state import LatestWrites, events_without_state, unaudited_state
from bastion.auth.bots import BotService
from bastion.auth.databases import DatabaseInventory
from bastion.auth.devices import DeviceService
from bastion.auth.renewal import RenewalService
from bastion.auth.requests import AccessRequestService, NewRequest
from bastion.auth.server import AuthDeps, AuthServer
from bastion.auth.sessions import SessionTrackerService
from bastion.auth.trust import TrustService
from bastion.auth.users import UserService
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.errors import AuthenticationFailed, BastionError, ConnectionProblem
from bastion.locks.matcher import Locked
from bastion.types.access import Lock, LockSpec, LockTarget, Role, User, UserSpec
from bastion.types.inventory import Node, NodeSpec
from bastion.types.meta import Metadata

PASSWORD = "correct horse battery staple"


class FaultyBackend(MemoryBackend):
    """Counts writes; the ``fail_at``-th raises ConnectionProblem before (or after) it is made."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, sweep_interval=None)
        self.writes = 0
        self.fail_at: int | None = None
        self.after = False

    async def _write(self, call: Callable[[], Awaitable[Any]]) -> Any:
        self.writes += 1
        hit = self.writes == self.fail_at
        if hit and not self.after:
            raise ConnectionProblem("injected failure before the write")
        result = await call()
        if hit:
            raise ConnectionProblem("injected failure after the write")
        return result

    async def create(self, item: Any) -> Any:
        return await self._write(lambda: super(FaultyBackend, self).create(item))

    async def put(self, item: Any) -> Any:
        return await self._write(lambda: super(FaultyBackend, self).put(item))

    async def update(self, item: Any, expected_revision: int | None = None) -> Any:
        return await self._write(lambda: super(FaultyBackend, self).update(item, expected_revision))

    async def compare_and_swap(self, expected: Any, replace: Any) -> Any:
        return await self._write(
            lambda: super(FaultyBackend, self).compare_and_swap(expected, replace)
        )

    async def delete(self, key: str, expected_revision: int | None = None) -> None:
        await self._write(lambda: super(FaultyBackend, self).delete(key, expected_revision))

    async def delete_range(self, prefix: str) -> int:
        return int(await self._write(lambda: super(FaultyBackend, self).delete_range(prefix)))

    async def commit(self, ops: Any) -> Any:
        return await self._write(lambda: super(FaultyBackend, self).commit(ops))


@dataclass
class World:
    clock: FakeClock
    backend: FaultyBackend
    auth: AuthServer
    users: UserService
    state: dict[str, Any]


async def _world(init: bool = True) -> World:
    clock = FakeClock()
    backend = FaultyBackend(clock)
    auth = AuthServer(AuthDeps(backend=backend, clock=clock, cluster="t.local", kek=b"\x01" * 32))
    if init:
        await auth.init()
    return World(clock, backend, auth, UserService(auth), {})


def _role(name: str = "dev") -> Role:
    return Role.model_validate({"metadata": {"name": name}, "spec": {"allow": {"logins": ["x"]}}})


async def _enrolled(w: World, name: str = "alice") -> None:
    invite = await w.users.add_user(name, ["access"], [name], {}, "admin")
    info = await w.users.start_invite(invite.token)
    code = pyotp.TOTP(info.otp_secret).at(w.clock.now())
    from bastion.testing import new_public_key

    _, pub = new_public_key()
    await w.users.complete_invite(invite.token, PASSWORD, code, pub, timedelta(hours=1), "ip")
    w.clock.advance(60)


async def _nothing(w: World) -> None:
    return None


async def _invited(w: World) -> None:
    invite = await w.users.add_user("bob", ["access"], ["bob"], {}, "admin")
    w.state["invite"] = invite
    w.state["info"] = await w.users.start_invite(invite.token)


async def _complete_invite(w: World) -> None:
    from bastion.testing import new_public_key

    code = pyotp.TOTP(w.state["info"].otp_secret).at(w.clock.now())
    _, pub = new_public_key()
    await w.users.complete_invite(
        w.state["invite"].token, PASSWORD, code, pub, timedelta(hours=1), "ip"
    )


async def _fail_logins(w: World) -> None:
    from bastion.testing import new_public_key

    _, pub = new_public_key()
    for _ in range(5):  # the default max_failed_logins
        try:
            await w.users.login("alice", "wrong password!!", "", pub, timedelta(hours=1), "ip")
        except AuthenticationFailed:
            pass


async def _change_password(w: World) -> None:
    secret = (await w.auth.credentials.get("alice")).totp_secret
    code = pyotp.TOTP(secret).at(w.clock.now())
    await w.users.change_password("alice", PASSWORD, PASSWORD + " new", "ip", otp=code)


async def _locked_out(w: World) -> None:
    await _enrolled(w)
    await _fail_logins(w)


async def _token(w: World) -> None:
    w.state["token"] = await w.auth.add_token(["node"], timedelta(hours=1), {}, "admin")


async def _join(w: World) -> None:
    from bastion.testing import new_public_key

    _, pub = new_public_key()
    await w.auth.join(w.state["token"].token, "host1", "node", pub, [], [], "10.0.0.2")


async def _update_role(w: World) -> None:
    role = await w.auth.roles.get("dev")
    role.spec.allow.logins = ["y"]
    await w.auth.update_resource(role, "admin")


async def _role_created(w: World) -> None:
    await w.auth.create_resource(_role(), "admin", force=False)


async def _bot(w: World) -> None:
    _, w.state["bot_token"] = await BotService(w.auth).add_bot(
        "ci", ["access"], ["deploy"], timedelta(hours=1), "admin"
    )


async def _bot_join(w: World) -> None:
    from bastion.testing import new_public_key

    _, pub = new_public_key()
    w.state["bot_certs"] = await BotService(w.auth).join(
        token=w.state["bot_token"].token, id_token="", bot="", public_key=pub,
        ttl=timedelta(hours=1), remote_addr="ip",
    )  # fmt: skip


async def _bot_joined(w: World) -> None:
    await _bot(w)
    await _bot_join(w)


async def _bot_renew(w: World) -> None:
    from bastion.testing import new_public_key

    _, pub = new_public_key()
    ident = w.state["bot_certs"].identity
    await RenewalService(w.auth).renew(ident, pub, timedelta(hours=1), "ip")


async def _bot_copy_renew(w: World) -> None:
    await _bot_renew(w)  # the original renews; then a copy of the old identity tries
    try:
        await _bot_renew(w)
    except Locked:
        pass


async def _request_world(w: World) -> None:
    """A requester, a reviewer, and one pending access request (w.state["request"])."""
    for role in (
        Role.model_validate(
            {"metadata": {"name": "req"}, "spec": {"allow": {"request": {"roles": ["dev"]}}}}
        ),
        _role(),
        Role.model_validate(
            {"metadata": {"name": "rev"}, "spec": {"allow": {"review_requests": {"roles": ["*"]}}}}
        ),
    ):
        await w.auth.create_resource(role, "admin", force=False)
    for name, roles in (("ann", ["req"]), ("rob", ["rev"])):
        user = User(metadata=Metadata(name=name), spec=UserSpec(roles=roles))
        await w.auth.create_resource(user, "admin", force=False)
    svc = AccessRequestService(w.auth)
    w.state["requests"] = svc
    w.state["request"] = await svc.create("ann", NewRequest(roles=("dev",)))


async def _request_created(w: World) -> None:
    await w.state["requests"].create("ann", NewRequest(roles=("dev",), reason="INC-1"))


async def _request_reviewed(w: World) -> None:
    from bastion.types.identity import Identity

    rob = Identity(cluster="t.local", user="rob", roles=("rev",), expires=w.clock.now())
    await w.state["requests"].review(w.state["request"].name, rob, "approve", "ok")


class _RootDialer:
    """A leaf's way to a root (in memory): the root's own validate_leaf."""

    def __init__(self, root: AuthServer) -> None:
        self.root = root

    async def validate(self, proxy_addr: str, ca_pin: str, body: Any) -> Any:
        from bastion.auth.trust import validate_leaf

        return await validate_leaf(self.root, body, "127.0.0.1:1")


def _trusted_cluster(token: str, enabled: bool = True) -> Any:
    from bastion.types.trust import RoleMapping, TrustedCluster, TrustedClusterSpec

    return TrustedCluster(
        metadata=Metadata(name="root.test"),
        spec=TrustedClusterSpec(
            enabled=enabled,
            proxy_addr="127.0.0.1:3080",
            token=token,
            ca_pin="sha256:00",
            role_map=[RoleMapping(remote="^access$", local=["access"])],
        ),
    )


async def _root_world(w: World) -> None:
    """A root cluster (its own backend: its writes are not counted) and a token of it."""
    from bastion.auth.trust import TrustService
    from bastion.testing import make_auth

    root = await make_auth(cluster="root.test")
    w.state["root"] = root.auth
    w.state["token"] = await root.auth.add_token(
        ["trusted_cluster"], timedelta(minutes=5), {}, "admin"
    )
    w.state["trust"] = TrustService(w.auth, _RootDialer(root.auth))


async def _trusting(w: World) -> None:
    await _root_world(w)
    await w.state["trust"].create(_trusted_cluster(w.state["token"].token), "admin", force=False)


async def _root_rotated(w: World) -> None:
    from bastion.auth.trust import cluster_cas

    await w.state["root"].rotate_ca("tls_user", "init", "admin")
    await w.state["trust"].update_root_cas("root.test", await cluster_cas(w.state["root"]))


async def _leaf_joined(w: World) -> None:
    """This cluster is the root of leaf.test (its remote_cluster recorded)."""
    from bastion.auth.trust import cluster_cas, validate_leaf
    from bastion.contract.trust import ValidateTrust
    from bastion.testing import make_auth

    leaf = await make_auth(cluster="leaf.test")
    w.state["leaf"] = leaf.auth
    token = await w.auth.add_token(["trusted_cluster"], timedelta(minutes=5), {}, "admin")
    body = ValidateTrust(token=token.token, leaf=await cluster_cas(leaf.auth))
    await validate_leaf(w.auth, body, "127.0.0.1:1")


async def _leaf_rotated(w: World) -> None:
    from bastion.auth.trust import TrustService, cluster_cas

    await w.state["leaf"].rotate_ca("tls_host", "init", "admin")
    await TrustService(w.auth).update_leaf_cas("leaf.test", await cluster_cas(w.state["leaf"]))


async def _leaf_rotated_via_proxy(w: World) -> None:
    """The leaf's CAs as a root's proxy in its own process records them (RECORD_TUNNEL)."""
    from bastion.auth.trust import TrustService, cluster_cas

    await w.state["leaf"].rotate_ca("tls_host", "init", "admin")
    cas = await cluster_cas(w.state["leaf"])
    await TrustService(w.auth).record_tunnel("leaf.test", None, None, cas)


Step = Callable[[World], Awaitable[None]]
# name -> (initialise the cluster first, prepare without faults, the change under test)
SCENARIOS: dict[str, tuple[bool, Step, Step]] = {
    "AuthServer.init": (False, _nothing, lambda w: w.auth.init("otp")),
    "AuthServer.create_resource/role": (True, _nothing, _role_created),
    "AuthServer.create_resource/role --force": (
        True,
        _role_created,
        lambda w: w.auth.create_resource(_role(), "admin", force=True),
    ),
    "AuthServer.create_resource/lock": (
        True,
        _nothing,
        lambda w: w.auth.create_resource(
            Lock(metadata=Metadata(name="l1"), spec=LockSpec(target=LockTarget(user="eve"))),
            "admin",
            force=False,
        ),
    ),
    "AuthServer.create_resource/node": (
        True,
        _nothing,
        lambda w: w.auth.create_resource(
            Node(metadata=Metadata(name="n1"), spec=NodeSpec(addr="10.0.0.9:22")),
            "admin",
            force=False,
        ),
    ),
    "AuthServer.update_resource": (True, _role_created, _update_role),
    "AuthServer.delete_resource/role": (
        True,
        _role_created,
        lambda w: w.auth.delete_resource("role", "dev", "admin"),
    ),
    "AuthServer.delete_resource/user": (
        True,
        _enrolled,
        lambda w: w.auth.delete_resource("user", "alice", "admin"),
    ),
    "AuthServer.add_token": (True, _nothing, _token),
    "AuthServer.join": (True, _token, _join),
    "AuthServer.rotate_ca": (True, _nothing, lambda w: w.auth.rotate_ca("ssh_user", "init", "a")),
    "UserService.add_user": (True, _nothing, lambda w: _invited(w)),
    "UserService.reset_user": (True, _enrolled, lambda w: w.users.reset_user("alice", "admin")),
    "UserService.complete_invite": (True, _invited, _complete_invite),
    "UserService.login": (True, _enrolled, _fail_logins),
    "UserService.change_password": (True, _enrolled, _change_password),
    "UserService.unlock": (True, _locked_out, lambda w: w.users.unlock("alice", "admin")),
    "AccessRequestService.create": (True, _request_world, _request_created),
    "AccessRequestService.review": (True, _request_world, _request_reviewed),
    "AccessRequestService.resolve": (
        True,
        _request_world,
        lambda w: w.state["requests"].resolve(w.state["request"].name, "DENIED", "no", "admin"),
    ),
    "AccessRequestService.delete": (
        True,
        _request_world,
        lambda w: w.state["requests"].delete(w.state["request"].name, "ann"),
    ),
    "BotService.add_bot": (True, _nothing, _bot),
    "BotService.join": (True, _bot, _bot_join),
    "BotService.remove_bot": (True, _bot, lambda w: BotService(w.auth).remove_bot("ci", "a")),
    "RenewalService.renew": (True, _bot_joined, _bot_renew),
    "RenewalService.renew/copied bot": (True, _bot_joined, _bot_copy_renew),
    "TrustService.create": (
        True,
        _root_world,
        lambda w: w.state["trust"].create(
            _trusted_cluster(w.state["token"].token), "admin", force=False
        ),
    ),
    "TrustService.update": (
        True,
        _trusting,
        lambda w: w.state["trust"].update(_trusted_cluster("", enabled=False), "admin"),
    ),
    "TrustService.delete": (True, _trusting, lambda w: w.state["trust"].delete("root.test", "a")),
    "TrustService.update_root_cas": (True, _trusting, _root_rotated),
    "TrustService.update_leaf_cas": (True, _leaf_joined, _leaf_rotated),
    "TrustService.record_tunnel": (True, _leaf_joined, _leaf_rotated_via_proxy),
}

NOT_AUDITED_STATE = {
    "AuthServer.audit_checkpointer": "writes only the log's own keys (audit/)",
    "AuthServer.auth_preference": "read only",
    "AuthServer.heartbeat_node": "heartbeats are not audited changes (they expire)",
    "AuthServer.heartbeat_proxy": "heartbeats are not audited changes (they expire)",
    "DatabaseInventory.heartbeat": "heartbeats are not audited changes (they expire)",
    "DatabaseInventory.visible": "read only",
    "AuthServer.sign_host": "issues a certificate (cert.issued), stores nothing",
    "AuthServer.lock_decision": "read only",
    "AuthServer.lock_access": "read only",
    "AuthServer.node_name_taken": "read only",
    "AuthServer.export_ca": "read only",
    "AuthServer.audited": "the shared helper itself",
    "AuthServer.audited_modify": "the shared helper itself",
    "AuthServer.external_step": "the shared helper itself",
    "AuthServer.revocation_ops": "builds ops for its callers' transactions, writes nothing",
    "UserService.start_invite": "read only",
    "UserService.invite_state": "read only",
    "UserService.sign_up_states": "read only",
    "UserService.invite_webauthn_options": "a WebAuthn challenge (bastion.mfa), no audited state",
    "UserService.begin_login": "failed logins: see UserService.login; else a challenge",
    "UserService.login_passwordless": "failures are events only (no lockout counting)",
    "AccessRequestService.get": "read only",
    "AccessRequestService.requestable": "read only",
    "AccessRequestService.list": "read only",
    "AccessRequestService.assume": "issues a certificate (cert.issued), stores nothing",
    "BotService.list_bots": "read only",
    "BotService.get_bot": "read only",
    "RenewalService.renew_host": "issues a certificate (cert.issued), stores nothing",
    "DeviceService.list": "read only",
    "DeviceService.get": "read only",
    "DeviceService.enroll_begin": "a single-use enrollment session (expiring), no audited state",
    "DeviceService.enroll_finish": "see test_device_changes_are_atomic",
    "DeviceService.authn_challenge": "a single-use challenge (expiring), no audited state",
    "DeviceService.authn_finish": "see test_device_changes_are_atomic",
    "DeviceService.authn_verify": "see test_device_changes_are_atomic (authn_finish)",
    "DeviceService.add": "see test_device_changes_are_atomic",
    "DeviceService.remove": "see test_device_changes_are_atomic",
    "DeviceService.create_enroll_token": "see test_device_changes_are_atomic",
    "DeviceService.set_compliance": "see test_device_changes_are_atomic",
    "DeviceService.recheck": "read only (a refusal is an event; the identity is returned)",
    "SessionTrackerService.report": "live-session trackers expire like heartbeats; the node "
    "audits session.start/join/leave/end",
    "SessionTrackerService.forget": "removes an expiring tracker (see report)",
    "SessionTrackerService.list": "read only",
    "SessionTrackerService.get": "read only",
    "TrustService.remote_identity": "read only (a refusal is an event at the proxy)",
    "TrustService.issue_remote": "issues a certificate (cert.issued), stores nothing",
    "TrustService.tunnel_certificate": "issues a certificate (cert.issued), stores nothing",
    "TrustService.tunnel_signing_key": "read only",
    "TrustService.own_cas": "read only",
    "TrustService.trusted": "read only",
    "TrustService.remotes": "read only",
    "TrustService.proxies": "read only",
    "TrustService.heartbeat_remote": "tunnel status and last heartbeat, like node heartbeats",
}


def _public_coroutines() -> set[str]:
    out = set()
    classes = (AuthServer, UserService, BotService, RenewalService, AccessRequestService)
    for cls in (*classes, DeviceService, SessionTrackerService, DatabaseInventory, TrustService):
        for name, _fn in inspect.getmembers(cls, inspect.iscoroutinefunction):
            if not name.startswith("_"):
                out.add(f"{cls.__name__}.{name}")
    return out


def test_every_public_coroutine_is_classified() -> None:
    covered = {name.split("/")[0] for name in SCENARIOS} | set(NOT_AUDITED_STATE)
    missing = _public_coroutines() - covered
    assert not missing, (
        f"classify {sorted(missing)}: add a scenario to SCENARIOS when it changes stored "
        "state, or say in NOT_AUDITED_STATE why it does not"
    )
    assert not covered - _public_coroutines(), "a classified method no longer exists"


async def _check(w: World) -> None:
    latest = LatestWrites()
    for item in await w.backend.get_range(PREFIX):
        index = index_of_key(item.key)
        assert index is not None
        latest.feed(index, item.value)
    _, findings = await unaudited_state(w.backend, latest)
    assert not findings, [f.message for f in findings]
    assert await events_without_state(w.backend, latest) == []


async def _run(name: str, fail_at: int | None, after: bool) -> int:
    init, prepare, act = SCENARIOS[name]
    w = await _world(init)
    await prepare(w)
    w.backend.writes, w.backend.fail_at, w.backend.after = 0, fail_at, after
    try:
        await act(w)
    except BastionError as exc:
        assert fail_at is not None, f"{name} failed without an injected fault: {exc}"
    w.backend.fail_at = None
    await _check(w)
    return w.backend.writes


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_a_failure_at_any_write_leaves_no_change_without_its_event(name: str) -> None:
    writes = await _run(name, None, False)
    assert writes > 0, f"{name} wrote nothing"
    for fail_at in range(1, writes + 1):
        for after in (False, True):
            try:
                await _run(name, fail_at, after)
            except AssertionError as exc:
                where = "after" if after else "before"
                raise AssertionError(f"{name}, failure {where} write {fail_at}: {exc}") from exc


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_each_path_commits_its_change_with_an_event(name: str) -> None:
    init, prepare, act = SCENARIOS[name]
    w = await _world(init)
    await prepare(w)
    before = len(await w.backend.get_range(PREFIX))
    await act(w)
    events = await w.auth.audit.read_from(before, 1000)
    assert any(e.fields.get("changes") for e in events), f"{name}: no event carries its change"


async def test_device_changes_are_atomic() -> None:
    """Every DeviceService change (inventory, token, enrollment with its spent token, the
    ceremony with its spent challenge, removal with its EK binding) leaves stored state and
    events matching, with a fault injected at each of the first writes."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from bastion.auth.device_attest import authn_message, enroll_message
    from bastion.types.identity import Identity

    fields = ("os_name", "os_version", "kernel", "model", "serial", "hostname", "bsh_version")
    for fail_at in (None, 0, 1, 2, 4, 6):
        w = await _world()
        pref = await w.auth.auth_preference()
        pref.spec.device_trust.allow_software = True
        kind = "cluster_auth_preference"
        await w.auth.audited("resource.update", [w.auth.prefs.update_op(pref)], "a", kind)
        devices = DeviceService(w.auth)
        w.backend.writes, w.backend.fail_at, w.backend.after = 0, fail_at, False
        try:
            device = await devices.add("SN-1", "linux", "alice", "a")
            token = (await devices.create_enroll_token(device.name, None, "a")).token
            await devices.set_compliance(device.name, "compliant", "", "a")
            key = ec.generate_private_key(ec.SECP256R1())
            pem = (
                key.public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode()
            )
            begin = await devices.enroll_begin("alice", token, "software", "", "", "", pem, {}, "")
            msg = enroll_message("t.local", begin.session, base64.b64decode(begin.nonce))
            sig = base64.b64encode(key.sign(msg, ec.ECDSA(hashes.SHA256()))).decode()
            await devices.enroll_finish("alice", begin.session, "", sig, "")
            identity = Identity(
                cluster="t.local", user="alice", expires=w.clock.now() + timedelta(hours=1)
            )
            challenge, nonce = await devices.authn_challenge(identity, device.name)
            profile = dict.fromkeys(fields, "")
            msg = authn_message("t.local", challenge, base64.b64decode(nonce), profile)
            sig = base64.b64encode(key.sign(msg, ec.ECDSA(hashes.SHA256()))).decode()
            await devices.authn_finish(identity, challenge, sig, profile, pem, "")
            await devices.remove(device.name, "a")
        except BastionError:
            assert fail_at is not None
        w.backend.fail_at = None
        await _check(w)
