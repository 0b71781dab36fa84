"""Per-session MFA certificates for databases: the real MFAService and the software key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bastion.auth.db_session import DbSessionCerts
from bastion.errors import AccessDenied, NotFound
from bastion.mfa.softkey import SoftwareAuthenticator
from bastion.rbac.checker import RoleSet
from bastion.rbac.session_mfa import SESSION_CERT_TTL
from bastion.testing import make_auth, new_public_key
from bastion.types import Identity, Metadata, load_resources
from bastion.types.database import Database, DatabaseSpec

ORIGIN = "https://127.0.0.1:3025"
ROLES = """
kind: role
metadata: {name: prod-db}
spec:
  options: {require_session_mfa: true}
  allow: {db_labels: {env: prod}, db_users: [admin], db_names: ["*"]}
---
kind: role
metadata: {name: dev-db}
spec:
  allow: {db_labels: {env: dev}, db_users: [admin], db_names: ["*"]}
"""


async def test_challenge_and_scoped_certificate() -> None:
    fx = await make_auth()
    auth = fx.auth
    pref = await auth.auth_preference()
    pref.spec.allow_software_authenticator = True
    await auth.prefs.update(pref)
    for role in load_resources(ROLES):
        await auth.create_resource(role, "admin", force=False)
    for name, env in (("prod1", "prod"), ("dev1", "dev")):
        await auth.databases.upsert(
            Database(
                metadata=Metadata(name=name, labels={"env": env}),
                spec=DatabaseSpec(uri="127.0.0.1:5432"),
            )
        )
    key = SoftwareAuthenticator()
    options = await auth.mfa.begin_registration("alice")
    await auth.mfa.finish_registration("alice", "key1", key.create(options, ORIGIN))
    ident = Identity(
        cluster="test.local", user="alice", roles=("prod-db", "dev-db"),
        expires=fx.clock.now() + timedelta(hours=8),
    )  # fmt: skip
    rs = RoleSet.from_roles([await auth.roles.get(r) for r in ident.roles], {})
    certs = DbSessionCerts(auth, auth.mfa)

    assert await certs.challenge(ident, rs, "dev1", "admin", "", "10.0.0.1") == {
        "mfa_required": False
    }
    answer = await certs.challenge(ident, rs, "prod1", "admin", "app", "10.0.0.1")
    assert answer["mfa_required"] and answer["scope"] == "session:db/prod1:admin"
    _, pub = new_public_key()
    got = await certs.issue(
        ident, rs, "prod1", "admin", "app", pub, key.get(answer["challenge"], ORIGIN), "10.0.0.1"
    )
    session = got.identity
    assert session.mfa_verified and session.mfa_scope == "session:db/prod1:admin"
    assert session.route is not None and session.route.db_service == "prod1"
    assert (session.route.db_user, session.route.db_name) == ("admin", "app")
    assert session.expires == fx.clock.now() + SESSION_CERT_TTL
    # The same assertion cannot be used twice; a session certificate derives nothing.
    with pytest.raises(AccessDenied):
        await certs.issue(
            ident, rs, "prod1", "admin", "app", pub, key.get(answer["challenge"], ORIGIN), "x"
        )
    with pytest.raises(AccessDenied):
        await certs.challenge(session, rs, "prod1", "admin", "", "10.0.0.1")
    with pytest.raises(NotFound):
        await certs.challenge(ident, rs, "nope", "admin", "", "10.0.0.1")
    with pytest.raises(AccessDenied):
        await certs.challenge(ident, rs, "prod1", "root", "", "10.0.0.1")
