"""authorize_certificate (our second, identity-aware check) and the asyncssh hook it relies on."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from nodeharness import DEFAULT_ROLES, DictRoles  # noqa: E402

from bastion.agent.ssh_auth import Authorized, authorize_certificate, install_certificate_hook
from bastion.ca.keys import generate_private_key
from bastion.ca.sshcert import sign_ssh_certificate, ssh_user_certificate
from bastion.errors import AccessDenied, ConnectionProblem
from bastion.types.access import Role
from bastion.types.identity import Identity

NOW = datetime(2026, 3, 1, tzinfo=UTC)
CA = generate_private_key()
USER_KEY = generate_private_key()


def _cert(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "cluster": "c1",
        "user": "alice",
        "roles": ("dev",),
        "logins": ("bob",),
        "expires": NOW + timedelta(hours=1),
    }
    fields.update(overrides)
    return ssh_user_certificate(
        CA,
        USER_KEY.public_key(),
        Identity.model_validate(fields),
        7,
        NOW - timedelta(minutes=1),
    )


async def _check(
    blob: bytes,
    login: str = "bob",
    roles: Any = None,
    labels: dict[str, str] | None = None,
    now: datetime = NOW,
) -> Authorized:
    return await authorize_certificate(
        blob,
        login,
        cluster="c1",
        node_name="node1",
        node_labels=labels if labels is not None else {"env": "dev"},
        user_ca_keys=[CA.public_key()],
        roles=roles or DictRoles(_roles_with_bob()),
        now=now,
        client_address="127.0.0.1",
    )


def _roles_with_bob() -> list[Role]:
    from nodeharness import role

    return [role("dev", {"logins": ["bob"], "node_labels": {"env": "dev"}}), *DEFAULT_ROLES[4:]]


async def test_allowed_keeps_identity_and_roles() -> None:
    result = await _check(_cert())
    assert result.identity.user == "alice"
    assert result.roles.role_names == ("dev",)
    assert result.cert_serial == "7"


@pytest.mark.parametrize(
    ("blob_args", "kwargs", "reason"),
    [
        ({}, {"now": NOW + timedelta(hours=2)}, "expired"),
        ({}, {"login": "root"}, "not listed"),
        ({"cluster": "other"}, {}, 'cluster "other"'),
        ({}, {"labels": {"env": "prod"}}, "node1"),
        ({"roles": ("dev", "no-dev")}, {}, "no-dev"),
        ({"kind": "host"}, {}, "host identity"),
    ],
)
async def test_refusals(blob_args: dict[str, Any], kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(AccessDenied, match=reason):
        await _check(_cert(**blob_args), **kwargs)


async def test_foreign_ca_and_garbage_and_missing_identity() -> None:
    foreign = ssh_user_certificate(
        generate_private_key(),
        USER_KEY.public_key(),
        Identity(cluster="c1", user="alice", logins=("bob",), expires=NOW + timedelta(hours=1)),
        1,
        NOW - timedelta(minutes=1),
    )
    with pytest.raises(AccessDenied, match="unknown CA"):
        await _check(foreign)
    with pytest.raises(AccessDenied, match="unreadable certificate"):
        await _check(b"\x00\x00\x00\x03abc")
    plain = sign_ssh_certificate(
        CA, USER_KEY.public_key(), cert_type="user", serial=1, key_id="alice",
        principals=["bob"], valid_after=NOW - timedelta(minutes=1),
        valid_before=NOW + timedelta(hours=1),
    )  # fmt: skip
    with pytest.raises(AccessDenied, match="no identity extension"):
        await _check(plain)


async def test_roles_unavailable_fails_closed() -> None:
    class Down:
        async def get_roles(self, names: Sequence[str]) -> list[Role]:
            raise ConnectionProblem("auth unreachable")

    with pytest.raises(AccessDenied, match="unavailable"):
        await _check(_cert(), roles=Down())


def test_asyncssh_private_hook_is_still_there() -> None:
    """Pins what install_certificate_hook relies on; if this fails, re-read asyncssh."""
    method = asyncssh.SSHServerConnection._validate_openssh_certificate
    assert inspect.iscoroutinefunction(method)
    assert list(inspect.signature(method).parameters) == ["self", "username", "cert"]
    source = inspect.getsource(asyncssh.SSHServerConnection._validate_client_certificate)
    assert "self._validate_openssh_certificate(" in source  # looked up on the instance


async def test_install_hook_shadows_per_instance_and_fails_closed() -> None:
    class Conn:
        async def _validate_openssh_certificate(self, username: str, cert: object) -> str:
            return "key"

    class Cert:
        public_data = b"blob"
        options: dict[str, object] = {"permit-agent-forwarding": True}

    seen: list[tuple[str, bytes]] = []

    async def refuse(login: str, blob: bytes) -> None:
        seen.append((login, blob))
        return None

    conn, other = Conn(), Conn()
    install_certificate_hook(conn, refuse)
    assert await conn._validate_openssh_certificate("bob", Cert()) is None
    assert seen == [("bob", b"blob")]
    assert await other._validate_openssh_certificate("bob", Cert()) == "key"
    with pytest.raises(RuntimeError):
        install_certificate_hook(object(), refuse)


# ---- per-session MFA ---------------------------------------------------------------------------


def _mfa_roles() -> DictRoles:
    from nodeharness import role

    return DictRoles(
        [
            role(
                "dev",
                {"logins": ["bob"], "node_labels": {"env": "dev"}},
                require_session_mfa=True,
            ),
            *DEFAULT_ROLES[4:],
        ]
    )


def _session_cert(node: str = "node1", login: str = "bob") -> bytes:
    from bastion.rbac.session_mfa import session_scope
    from bastion.types.identity import RouteToTarget

    return _cert(
        logins=(login,),
        mfa_verified=True,
        mfa_scope=session_scope(node, login),
        route=RouteToTarget(cluster="c1", node=node, login=login),
        expires=NOW + timedelta(minutes=1),
    )


async def test_ordinary_certificate_refused_where_session_mfa_is_required() -> None:
    from bastion.rbac.session_mfa import MFA_REQUIRED_MESSAGE, SessionMFARefused

    with pytest.raises(SessionMFARefused) as info:
        await _check(_cert(), roles=_mfa_roles())
    assert info.value.message == MFA_REQUIRED_MESSAGE


async def test_cluster_wide_session_mfa() -> None:
    from bastion.rbac.session_mfa import SessionMFARefused

    with pytest.raises(SessionMFARefused):
        await authorize_certificate(
            _cert(),
            "bob",
            cluster="c1",
            node_name="node1",
            node_labels={"env": "dev"},
            user_ca_keys=[CA.public_key()],
            roles=DictRoles(_roles_with_bob()),
            now=NOW,
            client_address="127.0.0.1",
            cluster_session_mfa=True,
        )


async def test_session_certificate_accepted_for_its_node_only() -> None:
    result = await _check(_session_cert(), roles=_mfa_roles())
    assert result.identity.mfa_verified
    with pytest.raises(AccessDenied, match="is for bob@node2, not bob@node1"):
        await _check(_session_cert(node="node2"), roles=_mfa_roles())
    # also where MFA is not required: the certificate is scoped to one target
    with pytest.raises(AccessDenied, match="is for bob@node2"):
        await _check(_session_cert(node="node2"))


async def test_node_refuses_a_certificate_without_a_device_where_required() -> None:
    from nodeharness import role

    def check(blob: bytes, mode: str, roles: list[Role]) -> Any:
        return authorize_certificate(
            blob,
            "bob",
            cluster="c1",
            node_name="node1",
            node_labels={"env": "dev"},
            user_ca_keys=[CA.public_key()],
            roles=DictRoles(roles),
            now=NOW,
            client_address="127.0.0.1",
            cluster_device_mode=mode,  # type: ignore[arg-type]
        )

    with pytest.raises(AccessDenied, match="requires a trusted device"):
        await check(_cert(), "required", _roles_with_bob())
    strict = role("dev", {"logins": ["bob"], "node_labels": {"env": "dev"}})
    strict.spec.options.device_trust_mode = "required"
    with pytest.raises(AccessDenied, match="requires a trusted device"):
        await check(_cert(), "off", [strict])
    assert (await check(_cert(device_id="d1"), "required", [strict])).identity.device_id == "d1"
    assert (await check(_cert(), "optional", _roles_with_bob())).identity.user == "alice"
