"""The SSH route's per-session MFA questions (bastion.proxy.ssh_route), asked by a leaf for the
plain OpenSSH path of a root user (docs/trusted-clusters.md): may a route need it at all, and
would this one be refused for want of it only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.clock import FakeClock
from bastion.proxy.ssh_route import SSHRoute, SSHRouteDeps
from bastion.types.access import Role
from bastion.types.identity import Identity
from bastion.types.inventory import Node, NodeSpec
from bastion.types.meta import Metadata


class _Nodes:
    async def list_nodes(self) -> list[Node]:
        return [Node(metadata=Metadata(name="web1"), spec=NodeSpec(hostname="web1"))]


class _Roles:
    def __init__(self, roles: list[Role]) -> None:
        self.roles = {r.name: r for r in roles}

    async def get_roles(self, names: Sequence[str]) -> list[Role]:
        return [self.roles[n] for n in names if n in self.roles]


def _role(name: str, mfa: bool) -> Role:
    spec: dict[str, Any] = {"allow": {"logins": ["root"], "node_labels": {"*": "*"}}}
    if mfa:
        spec["options"] = {"require_session_mfa": True}
    return Role.model_validate({"metadata": {"name": name}, "spec": spec})


def _route() -> SSHRoute:
    deps = SSHRouteDeps(
        nodes=_Nodes(),
        roles=_Roles([_role("plain", False), _role("strict", True)]),
        tunnel=None,  # type: ignore[arg-type]  # never dialled here
        audit=None,  # type: ignore[arg-type]
        registry=None,  # type: ignore[arg-type]
        clock=FakeClock(),
        cluster="leaf.test",
    )
    return SSHRoute(deps)


def _who(role: str) -> Identity:
    expires = datetime.now(UTC) + timedelta(hours=1)
    return Identity(
        cluster="leaf.test",
        user="root.test/alice",
        roles=(role,),
        logins=("root",),
        expires=expires,
    )


async def test_the_leaf_tells_whether_a_target_needs_per_session_mfa() -> None:
    route = _route()
    addr = ("127.0.0.1", 1)
    assert await route.may_require_session_mfa(_who("strict"))
    assert not await route.may_require_session_mfa(_who("plain"))
    assert await route.session_mfa_required(_who("strict"), "web1", "root", addr)
    assert not await route.session_mfa_required(_who("plain"), "web1", "root", addr)
    # any other refusal first (no such node, a login not granted): not an MFA question
    assert not await route.session_mfa_required(_who("strict"), "nope", "root", addr)
    assert not await route.session_mfa_required(_who("strict"), "web1", "admin", addr)
