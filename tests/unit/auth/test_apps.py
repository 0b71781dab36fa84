from datetime import timedelta

import pytest

from bastion.auth.apps import AppAccess, app_mfa_scope
from bastion.errors import AccessDenied
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
