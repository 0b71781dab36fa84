"""What an agent depends on, as small protocols declared where they are used."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bastion.audit.emitter import Emitter
from bastion.clock import Clock
from bastion.live.registry import LiveRegistry
from bastion.locks.watcher import LockWatcher
from bastion.types.access import Role
from bastion.types.inventory import CommandLabel

__all__ = ["NodeConfig", "NodeDeps", "RoleSource"]


class RoleSource(Protocol):
    async def get_roles(self, names: Sequence[str]) -> list[Role]:
        """Current definitions of the named roles; unknown names are skipped (grant nothing).

        Raises:
            ConnectionProblem: when the roles cannot be known (strict lock mode refuses then).
        """
        ...


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    """Node name (unique in the cluster; bound to the host certificate)."""
    cluster: str
    host_id: str
    host_key_pem: str
    """Private host key (OpenSSH or PKCS#8 PEM)."""
    host_cert: str
    """SSH host certificate line from the host CA."""
    user_ca_keys: tuple[str, ...]
    """OpenSSH public key lines of the user CA (all trusted keys, for rotation)."""
    labels: dict[str, str] = field(default_factory=dict)
    cmd_labels: dict[str, CommandLabel] = field(default_factory=dict)
    shell: str = ""
    """Default: the login's shell from the password database."""


@dataclass(frozen=True, slots=True)
class NodeDeps:
    config: NodeConfig
    roles: RoleSource
    audit: Emitter
    registry: LiveRegistry
    clock: Clock
    locks: LockWatcher | None = None
    """Lock state checked on each new connection (None: not checked, tests only)."""
