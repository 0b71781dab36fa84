from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bastion.rbac.db_session_mfa import (
    check_db_session_mfa,
    db_mfa_required,
    db_session_scope,
)
from bastion.types.access import Role, RoleConditions, RoleOptions, RoleSpec
from bastion.types.identity import Identity, RouteToTarget
from bastion.types.meta import Metadata


def _role(name: str, mfa: bool, users: list[str]) -> Role:
    return Role(
        metadata=Metadata(name=name),
        spec=RoleSpec(
            options=RoleOptions(require_session_mfa=mfa),
            allow=RoleConditions(db_labels={"env": ["prod"]}, db_users=users, db_names=["*"]),
        ),
    )


def _required(roles: list[Role], user: str, cluster: bool = False) -> bool:
    return db_mfa_required(
        roles, {}, {"env": "prod"}, user, "app", db_service="pg1", context=None,
        cluster_requires_mfa=cluster,
    )  # fmt: skip


def test_every_granting_role_must_require_it() -> None:
    strict, lax = _role("strict", True, ["admin", "reader"]), _role("lax", False, ["reader"])
    assert _required([strict, lax], "admin")
    assert not _required([strict, lax], "reader")  # a role without the option grants it too
    assert not _required([lax], "nobody")  # not granted: the access check refuses, not MFA
    assert _required([lax], "reader", cluster=True)


def _ident(**kw: object) -> Identity:
    base: dict[str, object] = {
        "cluster": "c", "user": "carol", "roles": ("r",),
        "expires": datetime.now(UTC) + timedelta(hours=1),
    }  # fmt: skip
    return Identity(**{**base, **kw})


def test_scoped_certificate_only_for_its_database_and_user() -> None:
    scope = db_session_scope("pg1", "admin")
    assert scope == "session:db/pg1:admin"
    route = RouteToTarget(cluster="c", db_service="pg1", db_user="admin")
    good = _ident(mfa_verified=True, mfa_scope=scope, route=route)
    assert check_db_session_mfa(good, db_service="pg1", db_user="admin", required=True) is None
    other = check_db_session_mfa(good, db_service="pg2", db_user="admin", required=False)
    assert other is not None and "not admin@db/pg2" in other.reason
    unverified = _ident(mfa_scope=scope, route=route)
    assert check_db_session_mfa(unverified, db_service="pg1", db_user="admin", required=False)
    ssh = _ident(mfa_verified=True, mfa_scope="session:web1:root", route=route)
    assert check_db_session_mfa(ssh, db_service="pg1", db_user="admin", required=False)
    plain = _ident()
    refused = check_db_session_mfa(plain, db_service="pg1", db_user="admin", required=True)
    assert refused is not None and "bsh db login pg1" in refused.message
    assert check_db_session_mfa(plain, db_service="pg1", db_user="admin", required=False) is None
