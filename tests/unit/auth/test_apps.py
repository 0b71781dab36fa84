from datetime import timedelta

import pytest

from bastion.auth.apps import AppAccess, app_mfa_scope
from bastion.errors import AccessDenied, BadParameter
from bastion.testing import make_auth, new_tls_key
from bastion.types.access import Role, RoleConditions, RoleOptions, RoleSpec
from bastion.types.apps import App, AppSpec
from bastion.types.identity import Identity
from bastion.types.meta import Metadata


async def _access():
    fx = await make_auth()
    await fx.auth.roles.create(
        Role(
            metadata=Metadata(name="dev"),
            spec=RoleSpec(
                allow=RoleConditions(app_labels={"env": "*"}),
                deny=RoleConditions(app_labels={"secret": "yes"}),
            ),
        )
    )
    access = AppAccess(fx.auth)
    for name, labels in (("grafana", {"env": "dev"}), ("vault", {"env": "dev", "secret": "yes"})):
        await access.register(
            App(metadata=Metadata(name=name, labels=labels), spec=AppSpec(uri="http://x:1"))
        )
    ident = Identity(
        cluster=fx.auth.cluster,
        user="alice",
        roles=("dev",),
        expires=fx.clock.now() + timedelta(hours=1),
    )
    return access, ident


async def test_allow_deny_and_one_answer_for_missing_and_forbidden():
    access, alice = await _access()
    assert (await access.authorize(alice, "grafana")).metadata.name == "grafana"
    msgs = []
    for name in ("vault", "nosuch"):
        with pytest.raises(AccessDenied) as caught:
            await access.authorize(alice, name)
        msgs.append(caught.value.message.replace(name, "X"))
    assert msgs[0] == msgs[1]
    assert [a.metadata.name for a in await access.list_allowed(alice)] == ["grafana"]
    assert await access.list_allowed(alice, {"env": "prod"}) == []


async def test_app_cert_is_routed_and_jwks_public():
    access, alice = await _access()
    _, pub = new_tls_key()
    cert = await access.app_cert(alice, pub, "grafana", timedelta(days=9), "ip")
    assert cert.expires <= alice.expires and "BEGIN CERTIFICATE" in cert.cert_pem
    with pytest.raises(AccessDenied):
        await access.app_cert(alice, pub, "vault", timedelta(hours=1), "ip")
    keys = (await access.jwks())["keys"]
    assert keys[0]["kid"] == (await access.signer()).kid and "d" not in keys[0]


async def test_per_session_mfa_apps_are_refused_without_an_mfa_verified_identity():
    access, alice = await _access()
    fx_roles = access._auth.roles
    await fx_roles.create(
        Role(
            metadata=Metadata(name="mfa-apps"),
            spec=RoleSpec(
                allow=RoleConditions(app_labels={"env": "mfa"}),
                options=RoleOptions(require_session_mfa=True),
            ),
        )
    )
    await access.register(
        App(metadata=Metadata(name="admin", labels={"env": "mfa"}), spec=AppSpec(uri="http://x:1"))
    )
    bob = alice.model_copy(update={"user": "bob", "roles": ("mfa-apps",)})
    with pytest.raises(AccessDenied, match="requires per-session MFA"):
        await access.authorize(bob, "admin")  # fail closed: never served without the MFA
    assert [a.metadata.name for a in await access.list_allowed(bob)] == ["admin"]
    verified = bob.model_copy(update={"mfa_verified": True, "mfa_scope": app_mfa_scope("admin")})
    assert (await access.authorize(verified, "admin")).metadata.name == "admin"
    elsewhere = bob.model_copy(update={"mfa_verified": True, "mfa_scope": "app:other"})
    with pytest.raises(AccessDenied):
        await access.authorize(elsewhere, "admin")


# ---- MFA-scoped app certificates (bsh apps login NAME for a per-session MFA app) ----------------

ORIGIN = "https://127.0.0.1:3025"  # make_auth's public_url: the default origin and RP id


async def _mfa_access():
    import pyotp

    fx = await make_auth()
    pref = await fx.auth.auth_preference()
    pref.spec.allow_software_authenticator = True
    await fx.auth.prefs.update(pref)
    await fx.auth.roles.create(
        Role(
            metadata=Metadata(name="ops"),
            spec=RoleSpec(
                allow=RoleConditions(app_labels={"env": "mfa"}),
                options=RoleOptions(require_session_mfa=True),
            ),
        )
    )
    await fx.auth.roles.create(
        Role(
            metadata=Metadata(name="dev"),
            spec=RoleSpec(allow=RoleConditions(app_labels={"env": "dev"})),
        )
    )
    access = AppAccess(fx.auth)
    for name, env in (("admin", "mfa"), ("grafana", "dev")):
        await access.register(
            App(metadata=Metadata(name=name, labels={"env": env}), spec=AppSpec(uri="http://x:1"))
        )
    alice = Identity(
        cluster=fx.auth.cluster,
        user="alice",
        roles=("ops", "dev"),
        expires=fx.clock.now() + timedelta(hours=1),
    )
    secret = pyotp.random_base32()
    await fx.auth.mfa.record_totp("alice", "phone", secret, 0)
    return fx, access, alice, pyotp.TOTP(secret)


def _identity(pem: str) -> Identity:
    from cryptography import x509

    from bastion.ca.x509 import identity_from_certificate

    return identity_from_certificate(x509.load_pem_x509_certificate(pem.encode()))


async def test_mfa_app_cert_with_totp_is_scoped_short_and_accepted():
    fx, access, alice, totp = await _mfa_access()
    _, pub = new_tls_key()
    # The plain certificate path and a plain identity: refused for the MFA app.
    with pytest.raises(AccessDenied, match="per-session MFA"):
        await access.app_cert(alice, pub, "admin", timedelta(hours=1), "ip")
    with pytest.raises(AccessDenied, match="per-session MFA"):
        await access.authorize(alice, "admin")
    assert not (await access.mfa_challenge(alice, "grafana", "ip")).mfa_required
    asked = await access.mfa_challenge(alice, "admin", "ip")
    assert asked.mfa_required and asked.scope == app_mfa_scope("admin")
    assert asked.totp and asked.challenge is None  # no security key: TOTP only
    with pytest.raises(AccessDenied, match="TOTP"):
        await access.mfa_cert(alice, pub, "admin", "ip", otp="000000")
    with pytest.raises(BadParameter):
        await access.mfa_cert(alice, pub, "admin", "ip")
    code = totp.at(fx.clock.now())
    cert = await access.mfa_cert(alice, pub, "admin", "ip", otp=code)
    assert cert.expires <= fx.clock.now() + timedelta(minutes=1)
    got = _identity(cert.cert_pem)
    assert got.mfa_verified and got.mfa_scope == "app:admin" and got.mfa_device
    assert got.route is not None and got.route.app == "admin"
    assert (await access.authorize(got, "admin")).metadata.name == "admin"
    # Not for another app, not reused, and nothing derives from it.
    with pytest.raises(AccessDenied):
        await access.authorize(got.model_copy(update={"mfa_scope": "app:grafana"}), "admin")
    with pytest.raises(AccessDenied, match="wrong or was already used"):
        await access.mfa_cert(alice, pub, "admin", "ip", otp=code)
    with pytest.raises(AccessDenied, match="MFA-scoped"):
        await access.mfa_challenge(got, "admin", "ip")
    with pytest.raises(AccessDenied, match="MFA-scoped"):
        await access.app_cert(got, pub, "admin", timedelta(hours=1), "ip")
    # Unknown and forbidden apps: the one answer.
    with pytest.raises(AccessDenied, match="not found or access denied"):
        await access.mfa_challenge(alice, "nosuch", "ip")
    from bastion.audit.log import AuditQuery

    events = await fx.auth.audit.search(AuditQuery(types=("mfa.session",)))
    assert [e.outcome for e in events].count("success") == 1
    assert all(e.target == "app/admin" for e in events)


async def test_mfa_app_cert_with_a_security_key_and_locks():
    from bastion.mfa.softkey import SoftwareAuthenticator
    from bastion.types.access import Lock, LockSpec, LockTarget

    fx, access, alice, _ = await _mfa_access()
    key = SoftwareAuthenticator()
    options = await fx.auth.mfa.begin_registration("alice")
    await fx.auth.mfa.finish_registration("alice", "key1", key.create(options, ORIGIN))
    _, pub = new_tls_key()
    asked = await access.mfa_challenge(alice, "admin", "ip")
    assert asked.challenge is not None and asked.totp
    # An assertion for another scope (the SSH flow's) does not answer the app's challenge.
    other = await fx.auth.mfa.begin_challenge("alice", "session:node:root")
    with pytest.raises(AccessDenied):
        await access.mfa_cert(alice, pub, "admin", "ip", webauthn=key.get(other, ORIGIN))
    cert = await access.mfa_cert(
        alice, pub, "admin", "ip", webauthn=key.get(asked.challenge, ORIGIN)
    )
    assert _identity(cert.cert_pem).mfa_scope == "app:admin"
    await fx.auth.locks.create(
        Lock(metadata=Metadata(name="l1"), spec=LockSpec(target=LockTarget(user="alice")))
    )
    again = await access.mfa_challenge(alice, "admin", "ip")
    assert again.challenge is not None
    with pytest.raises(AccessDenied):
        await access.mfa_cert(alice, pub, "admin", "ip", webauthn=key.get(again.challenge, ORIGIN))
