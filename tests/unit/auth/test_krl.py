"""Tests for bastion.auth.krl: which locks become which KRL entries."""

from __future__ import annotations

from datetime import timedelta

from bastion.auth.krl import krl_for
from bastion.ca import authority as ca_authority
from bastion.ca.krl import parse_krl, verify_krl_signature
from bastion.ca.sshcert import SSHCertificate, parse_ssh_certificate
from bastion.clock import FakeClock
from bastion.rbac.checker import RoleSet
from bastion.testing import AuthFixture, make_auth, new_public_key
from bastion.types.access import Lock, LockSpec, LockTarget, User, UserSpec
from bastion.types.meta import Metadata


async def _issue(
    fx: AuthFixture, user: str, logins: list[str], device: str = "", mfa_device: str = ""
) -> SSHCertificate:
    roles = [await fx.auth.roles.get("access")]
    traits = {"logins": logins}
    ident = fx.auth.issuer.user_identity(
        cluster="test.local",
        user=user,
        roles=["access"],
        traits=traits,
        role_set=RoleSet.from_roles(roles, traits),
        requested_ttl=timedelta(hours=1),
    )
    if device:
        ident = ident.model_copy(update={"device_id": device})
    if mfa_device:
        ident = ident.model_copy(update={"mfa_device": mfa_device})
    _, pub = new_public_key()
    certs = await fx.auth.issuer.issue_user(ident, pub, "1.2.3.4")
    return parse_ssh_certificate(certs.ssh_cert)


async def _lock(
    fx: AuthFixture, name: str, expires_in: timedelta | None = None, **target: str
) -> None:
    expires = fx.clock.now() + expires_in if expires_in else None
    lock = Lock(
        metadata=Metadata(name=name, expires=expires),
        spec=LockSpec(target=LockTarget(**target)),
    )
    await fx.auth.locks.create(lock)


async def test_no_locks_empty_signed_krl() -> None:
    fx = await make_auth()
    published = await krl_for(fx.auth)
    krl = parse_krl(published.data)
    assert krl.certificates == () and published.key_ids == () and published.serials == ()
    assert krl.version == published.version == int(fx.clock.now().timestamp() * 1000)
    ca = await fx.auth.issuer.ca("ssh_user")
    trusted = ca_authority.trusted_public_keys(ca)
    assert verify_krl_signature(published.data, published.signature, trusted) == trusted[0]


async def test_user_lock_is_a_key_id_and_covers_future_certs() -> None:
    fx = await make_auth()
    alice, bob = await _issue(fx, "alice", ["alice"]), await _issue(fx, "bob", ["bob"])
    await _lock(fx, "l1", user="alice")
    published = await krl_for(fx.auth)
    krl = parse_krl(published.data)
    assert published.key_ids == ("alice",) and published.serials == ()
    assert krl.is_revoked(alice) and not krl.is_revoked(bob)
    assert krl.is_revoked(await _issue(fx, "alice", ["alice"]))  # issued after the KRL


async def test_login_and_device_locks_revoke_matching_live_serials() -> None:
    fx = await make_auth()
    root = await _issue(fx, "alice", ["alice", "root"])
    plain = await _issue(fx, "alice", ["alice"])
    laptop = await _issue(fx, "bob", ["bob"], device="laptop-1")
    await _lock(fx, "l-login", login="root")
    await _lock(fx, "l-device", device="laptop-1")
    published = await krl_for(fx.auth)
    krl = parse_krl(published.data)
    assert set(published.serials) == {root.serial, laptop.serial}
    assert krl.is_revoked(root) and krl.is_revoked(laptop) and not krl.is_revoked(plain)


async def test_role_lock_revokes_holders_and_live_certs_with_the_role() -> None:
    fx = await make_auth()
    cert = await _issue(fx, "carol", ["carol"])
    holder = User(metadata=Metadata(name="dave"), spec=UserSpec(roles=["access"]))
    await fx.auth.users.create(holder)
    await _lock(fx, "l-role", role="access")
    published = await krl_for(fx.auth)
    assert "dave" in published.key_ids and cert.serial in published.serials
    assert parse_krl(published.data).is_revoked(cert)


async def test_expired_certs_and_locks_are_left_out_and_unexpressible_reported() -> None:
    clock = FakeClock()
    fx = await make_auth(clock)
    await _issue(fx, "erin", ["root"])
    await _lock(fx, "l-short", expires_in=timedelta(minutes=5), user="frank")
    await _lock(fx, "l-node", node="web-1")
    await _lock(fx, "l-session", user="erin", session="s-1")
    clock.advance(timedelta(hours=2))  # the certificate (1h) and the short lock have expired
    await _lock(fx, "l-login", login="root")
    published = await krl_for(fx.auth)
    assert published.key_ids == () and published.serials == ()
    assert published.unenforced == ("l-node", "l-session")


async def test_mfa_device_lock_revokes_live_certs_obtained_with_that_key() -> None:
    fx = await make_auth()
    with_key = await _issue(fx, "alice", ["alice"], mfa_device="key-7")
    other_key = await _issue(fx, "alice", ["alice"], mfa_device="key-8")
    await _lock(fx, "l-key", mfa_device="key-7")
    await _lock(fx, "l-key-bob", mfa_device="key-8", user="bob")  # all fields must match
    published = await krl_for(fx.auth)
    krl = parse_krl(published.data)
    assert published.serials == (with_key.serial,) and published.unenforced == ()
    assert krl.is_revoked(with_key) and not krl.is_revoked(other_key)
