"""Automatic database user provisioning (``create_db_user``) and per-session MFA for databases
against a real PostgreSQL (one rig shared by the module).

Provisioning: the db user (the Bastion user name) is created on the first connection with
the role's ``db_roles``, disabled (NOLOGIN, never dropped) after the last session, enabled
again on the next one, and a lock that cuts a live session disables it too; both directions
audited. A user name that is not a safe identifier is refused with one line.

Per-session MFA: a role with ``require_session_mfa`` makes the proxy refuse an ordinary
database certificate (28000, one line naming ``bsh db login``) and accept the 1-minute
certificate of the MFA ceremony (Bastion's software authenticator) for that database and db
user only."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio

from bastion.agent.db_provision import MARKER, pg_enable_sql
from bastion.auth.db_session import DbSessionCerts
from bastion.mfa.softkey import SoftwareAuthenticator
from bastion.rbac.checker import RoleSet
from bastion.testing import missing_peer, new_tls_key, require_binary
from bastion.testing.db_rig import DbRig, start_db_rig
from bastion.testing.peers.postgres import PostgresUnavailable
from bastion.testing.peers.postgres_tls import psql_local
from bastion.types.access import (
    Lock,
    LockSpec,
    LockTarget,
    Role,
    RoleConditions,
    RoleOptions,
    RoleSpec,
    User,
    UserSpec,
)
from bastion.types.database import Database, DatabaseSpec
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

pytestmark = [
    pytest.mark.integration,
    pytest.mark.needs_postgres,
    pytest.mark.asyncio(loop_scope="module"),
]
ORIGIN = "https://127.0.0.1:3025"  # make_auth's public_url: the WebAuthn origin and RP id


async def _psql(conninfo: str, sql: str, timeout: float = 20) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        require_binary("psql"), conninfo, "-X", "-Atc", sql,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def _until(check: Any, timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DbRig]:
    require_binary("psql")
    try:
        async with start_db_rig(tmp_path_factory.mktemp("dbprov")) as started:
            yield started
    except PostgresUnavailable as exc:
        missing_peer(str(exc))


def _identity(rig: DbRig, user: str, role: str) -> Identity:
    return Identity(
        cluster=rig.alice.cluster, user=user, roles=(role,), traits={},
        expires=rig.alice.expires, user_epoch="e1",
    )  # fmt: skip


async def _login(
    rig: DbRig, user: str, name: str, db_user: str = "", new: bool = True, role: str = "auto"
) -> str:
    """``bsh db login pg1 --db-user DB_USER`` (default: the user name) for Bastion user
    ``user`` (role ``auto``)."""
    auth = rig.certs._auth  # noqa: SLF001 - the rig's auth server
    if new:
        await auth.users.create(
            User(metadata=Metadata(name=user), spec=UserSpec(roles=[role], epoch="e1"))
        )
    ident = _identity(rig, user, role)
    key_pem, pub = new_tls_key()
    cert = await rig.certs.user_cert(
        ident, pub, "pg1", db_user or user, "postgres", timedelta(hours=1), "test"
    )
    files = rig._files  # noqa: SLF001
    return files(name, cert.cert_pem, key_pem, cert.ca_pem, rig.port, db_user or user)


def _role_state(rig: DbRig, user: str) -> str:
    return psql_local(
        rig.pg,
        "select rolcanlogin, (select string_agg(b.rolname, ',') from pg_auth_members m join "
        "pg_roles b on b.oid = m.roleid where m.member = r.oid) from pg_roles r "
        f"where rolname = '{user}'",
    ).strip()


async def test_create_disable_reenable_and_lock(rig: DbRig) -> None:
    psql_local(rig.pg, "create role reader nologin; grant select on t to reader")
    auth = rig.certs._auth  # noqa: SLF001
    await auth.roles.create(
        Role(
            metadata=Metadata(name="auto"),
            spec=RoleSpec(
                options=RoleOptions(create_db_user=True),
                allow=RoleConditions(
                    db_labels={"env": "dev"}, db_names=["postgres"], db_roles=["reader"]
                ),
            ),
        )
    )
    conninfo = await _login(rig, "bob", "bob")
    assert _role_state(rig, "bob") == ""  # no such role yet

    # First connection: created with the role, logs in by certificate, reads through reader.
    code, out, err = await _psql(conninfo, "select count(*) from t; select current_user")
    assert code == 0, err
    assert out.split() == ["2", "bob"]
    created = rig.audit.of("db.user.create")
    assert created[-1]["outcome"] == "success" and created[-1]["reason"] == "created"
    assert created[-1]["db_user"] == "bob" and created[-1]["db_roles"] == ["reader"]
    # Session over: disabled (not dropped), audited.
    await _until(lambda: bool(rig.audit.of("db.user.disable")))
    assert rig.audit.of("db.user.disable")[-1]["outcome"] == "success"
    assert _role_state(rig, "bob") == "f|reader"

    # Another db user than the user name is refused in one line (nothing created).
    other = await _login(rig, "bob", "bob2", "alice_db", new=False)
    code, _, err = await _psql(other, "select 1")
    assert code != 0 and "creates your db user" in err
    assert len(err.strip().splitlines()) == 1

    # A user name that is not a safe identifier: one line, nothing created.
    odd = await _login(rig, "e" * 64, "eve")  # longer than PostgreSQL's 63-byte names
    code, _, err = await _psql(odd, "select 1")
    assert code != 0 and "cannot be created automatically" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

    # Next connection: enabled again; while it runs, a lock cuts it and the user is disabled.
    proc = await asyncio.create_subprocess_exec(
        require_binary("psql"), conninfo, "-X", "-Atc", "select pg_sleep(30)",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await _until(lambda: any(e["query"] == "select pg_sleep(30)" for e in rig.audit.of(
        "db.session.query")))  # fmt: skip
    assert rig.audit.of("db.user.create")[-1]["reason"] == "enabled"
    assert _role_state(rig, "bob") == "t|reader"
    lock = Lock(
        metadata=Metadata(name="l-bob"),
        spec=LockSpec(target=LockTarget(user="bob"), message="bob is away"),
    )
    rig.locks.put(lock)
    await rig.locks.enforce([lock])
    _, err_b = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode != 0 and "bob is away" in err_b.decode()
    await _until(lambda: len(rig.audit.of("db.user.disable")) == 2)
    assert _role_state(rig, "bob") == "f|reader"


async def test_roles_removed_from_db_roles_are_revoked_at_the_next_connection(
    rig: DbRig,
) -> None:
    psql_local(rig.pg, "create role tagger nologin; grant insert on t to tagger")
    psql_local(rig.pg, "do $$ begin create role reader nologin; grant select on t to reader; "
                       "exception when duplicate_object then null; end $$")  # fmt: skip
    auth = rig.certs._auth  # noqa: SLF001

    def role(db_roles: list[str]) -> Role:
        return Role(
            metadata=Metadata(name="auto-rw"),
            spec=RoleSpec(
                options=RoleOptions(create_db_user=True),
                allow=RoleConditions(
                    db_labels={"env": "dev"}, db_names=["postgres"], db_roles=db_roles
                ),
            ),
        )

    await auth.roles.upsert(role(["reader", "tagger"]))
    conninfo = await _login(rig, "dave", "dave", role="auto-rw")
    code, _, err = await _psql(conninfo, "insert into t values (3); select 1")
    assert code == 0, err
    await _until(lambda: _role_state(rig, "dave") == "f|reader,tagger", 30)

    # An admin narrows the role; dave's next connection has exactly what it lists.
    await auth.roles.upsert(role(["reader"]))
    code, _, err = await _psql(conninfo, "insert into t values (4)")
    assert code != 0 and "permission denied" in err, err
    code, out, err = await _psql(conninfo, "select count(*) > 0 from t")
    assert code == 0 and out.strip() == "t", err
    enabled = rig.audit.of("db.user.create")[-2]  # the one before the read's
    assert enabled["reason"] == "enabled" and enabled["db_roles_revoked"] == ["tagger"]
    assert "db_roles_revoked" not in rig.audit.of("db.user.create")[-1]  # nothing left to revoke
    await _until(lambda: _role_state(rig, "dave") == "f|reader", 30)


async def test_enabling_fails_whole_when_a_role_it_must_not_hold_stays(rig: DbRig) -> None:
    """The enable transaction's last statement checks the memberships: one left over (on
    PostgreSQL 16 a membership granted by another role survives the admin's REVOKE) rolls the
    whole enable back, LOGIN included."""
    psql_local(rig.pg, "create role frank nologin; create role auditor nologin; "
                       f"comment on role frank is '{MARKER}'; grant auditor to frank")  # fmt: skip
    with pytest.raises(RuntimeError, match="admin cannot revoke"):
        psql_local(rig.pg, pg_enable_sql("frank", [], create=False))  # nothing revoked
    assert _role_state(rig, "frank") == "f|auditor"  # still disabled
    psql_local(rig.pg, pg_enable_sql("frank", [], create=False, revoke=["auditor"]))
    assert _role_state(rig, "frank") == "t|"


async def test_per_session_mfa(rig: DbRig) -> None:
    auth = rig.certs._auth  # noqa: SLF001
    pref = await auth.auth_preference()
    pref.spec.allow_software_authenticator = True
    await auth.prefs.update(pref)
    psql_local(rig.pg, "create role carol_db login; grant select on t to carol_db")
    await auth.roles.create(
        Role(
            metadata=Metadata(name="mfa-db"),
            spec=RoleSpec(
                options=RoleOptions(require_session_mfa=True),
                allow=RoleConditions(
                    db_labels={"env": "dev"}, db_users=["carol_db"], db_names=["postgres"]
                ),
            ),
        )
    )
    await auth.databases.upsert(  # auth's record of pg1 (the rig's proxy has its own)
        Database(
            metadata=Metadata(name="pg1", labels={"env": "dev"}),
            spec=DatabaseSpec(uri=f"127.0.0.1:{rig.pg.port}", host_id="dbagent-1"),
        )
    )
    ordinary = await _login(rig, "carol", "carol", "carol_db", role="mfa-db")
    code, _, err = await _psql(ordinary, "select 1")
    assert code != 0 and "per-session MFA required" in err and "bsh db login pg1" in err
    assert len(err.strip().splitlines()) == 1
    assert rig.audit.of("db.session.start")[-1]["outcome"] == "failure"

    # The ceremony (software security key): a 1-minute certificate for pg1 as carol_db.
    key = SoftwareAuthenticator()
    options = await auth.mfa.begin_registration("carol")
    await auth.mfa.finish_registration("carol", "key1", key.create(options, ORIGIN))
    ident = _identity(rig, "carol", "mfa-db")
    role_set = RoleSet.from_roles([await auth.roles.get("mfa-db")], {})
    sessions = DbSessionCerts(auth, auth.mfa)
    answer = await sessions.challenge(ident, role_set, "pg1", "carol_db", "", "10.0.0.1")
    assert answer["mfa_required"] and answer["scope"] == "session:db/pg1:carol_db"
    key_pem, pub = new_tls_key()
    issued = await sessions.issue(
        ident, role_set, "pg1", "carol_db", "", pub, key.get(answer["challenge"], ORIGIN),
        "10.0.0.1",
    )  # fmt: skip
    assert issued.identity.mfa_verified
    files = rig._files  # noqa: SLF001
    conninfo = files("carol-mfa", issued.cert_pem, key_pem, issued.ca_pem, rig.port, "carol_db")
    code, out, err = await _psql(conninfo, "select current_user")
    assert code == 0, err
    assert out.strip() == "carol_db"
    # ...for that db user only.
    code, _, err = await _psql(conninfo.replace("user=carol_db", "user=alice_db"), "select 1")
    assert code != 0 and len(err.strip().splitlines()) == 1
