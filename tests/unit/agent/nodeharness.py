"""A real SSH node over loopback, with certificates minted by a real AuthServer.

Shared by tests/unit/agent/test_ssh_*.py and tests/integration/test_ssh_node.py (imported through
sys.path; it is not a test module).
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
from cryptography.hazmat.primitives import serialization

from bastion.agent.deps import NodeConfig, NodeDeps
from bastion.agent.ssh_node import SSHNode
from bastion.ca.keys import private_key_to_pem
from bastion.live.registry import LiveRegistry
from bastion.locks.watcher import LockWatcher
from bastion.runtime import as_transport
from bastion.testing import FakeClock, make_auth, new_public_key
from bastion.types.access import Role, RoleConditions, RoleOptions, RoleSpec
from bastion.types.audit import AuditEvent
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

CLUSTER = "test.local"
NODE = "node1"
LOGIN = getpass.getuser()
"""The OS login the tests use: the current user (root in CI)."""


class FakeEmitter:
    """An in-memory Emitter: keeps every event."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def emit(
        self, event_type: str, *, outcome: str = "success", **fields: object
    ) -> AuditEvent | None:
        top = {k: v for k, v in fields.items() if k in AuditEvent.model_fields and v is not None}
        extra = {k: v for k, v in fields.items() if k not in AuditEvent.model_fields}
        event = AuditEvent(
            type=event_type, time=datetime.now(UTC), outcome=outcome, fields=extra, **top
        )
        self.events.append(event)
        return event

    def of(self, event_type: str) -> list[AuditEvent]:
        return [e for e in self.events if e.type == event_type]

    async def wait_for(
        self, event_type: str, count: int = 1, timeout: float = 5
    ) -> list[AuditEvent]:
        async with asyncio.timeout(timeout):
            while len(self.of(event_type)) < count:
                await asyncio.sleep(0.01)
        return self.of(event_type)


class DictRoles:
    def __init__(self, roles: Sequence[Role]) -> None:
        self.roles = {r.metadata.name: r for r in roles}

    async def get_roles(self, names: Sequence[str]) -> list[Role]:
        return [self.roles[n] for n in names if n in self.roles]


def role(name: str, allow: dict[str, Any] | None = None, deny: dict[str, Any] | None = None,
         **options: Any) -> Role:  # fmt: skip
    return Role(
        metadata=Metadata(name=name),
        spec=RoleSpec(
            allow=RoleConditions(**(allow or {})),
            deny=RoleConditions(**(deny or {})),
            options=RoleOptions(**options),
        ),
    )


DEFAULT_ROLES = [
    role(
        "dev",
        {"logins": [LOGIN, "root", "nosuchuser-bastion"], "node_labels": {"*": "*"}},
        forward_agent=True,
    ),  # fmt: skip
    role("noforward", {"logins": [LOGIN], "node_labels": {"*": "*"}}, port_forwarding=False),
    role("nopty", {"logins": [LOGIN], "node_labels": {"*": "*"}}, permit_pty=False),
    role("dev-allow", {"logins": [LOGIN], "node_labels": {"*": "*"}}),
    role("no-dev", deny={"node_labels": {"env": "dev"}}),
]


@dataclass
class Client:
    key: asyncssh.SSHKey
    cert: asyncssh.SSHCertificate
    key_path: Path | None = None
    cert_path: Path | None = None
    identity: Identity | None = None


@dataclass
class NodeHarness:
    node: SSHNode
    audit: FakeEmitter
    registry: LiveRegistry
    clock: FakeClock
    fx: Any
    host_ca_known_hosts: str
    port: int = 0
    tmp: Path = field(default_factory=Path)
    locks: LockWatcher | None = None
    """The node's lock watcher (``make_node(with_locks=True)``); fed by the test."""

    async def client(
        self,
        roles: Sequence[str] = ("dev",),
        logins: Sequence[str] = (LOGIN,),
        *,
        ttl: timedelta = timedelta(hours=1),
        user: str = "alice",
        fx: Any = None,
        write_files: bool = False,
        device_id: str = "",
    ) -> Client:
        fx = fx or self.fx
        key, pub = new_public_key()
        identity = Identity(
            cluster=fx.auth.cluster,
            user=user,
            roles=tuple(roles),
            logins=tuple(logins),
            expires=fx.clock.now() + ttl,
            device_id=device_id,
        )
        certs = await fx.auth.issuer.issue_user(identity, pub, "127.0.0.1")
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        client = Client(
            asyncssh.import_private_key(pem), asyncssh.import_certificate(certs.ssh_cert)
        )
        client.identity = identity
        if write_files:
            client.key_path = self.tmp / f"{user}-{len(list(self.tmp.iterdir()))}"
            client.key_path.write_bytes(pem)
            client.key_path.chmod(0o600)
            client.cert_path = Path(f"{client.key_path}-cert.pub")
            client.cert_path.write_text(certs.ssh_cert + "\n")
        return client

    def known_hosts(self) -> Any:
        return asyncssh.import_known_hosts(self.host_ca_known_hosts)

    async def connect(self, client: Client, login: str = LOGIN, port: int | None = None,
                      **kwargs: Any) -> asyncssh.SSHClientConnection:  # fmt: skip
        return await asyncio.wait_for(
            asyncssh.connect(
                "127.0.0.1",
                port or self.port,
                username=login,
                client_keys=[(client.key, client.cert)],
                known_hosts=self.known_hosts(),
                host_key_alias=f"{NODE}.{CLUSTER}",
                **{"agent_path": None, **kwargs},
            ),
            10,
        )


async def make_node(tmp: Path, roles: Sequence[Role] = DEFAULT_ROLES,
                    labels: dict[str, str] | None = None,
                    with_locks: bool = False) -> NodeHarness:  # fmt: skip
    """``with_locks``: a LockWatcher over the node's registry, wired as agent/service.py does
    (the node checks it on each new connection; its roles come from the node's role source)."""
    clock = FakeClock(datetime.now(UTC))  # real time: asyncssh checks validity against it
    fx = await make_auth(clock, cluster=CLUSTER)
    host_key, host_pub = new_public_key()
    host = await fx.auth.sign_host(NODE, host_pub, [], timedelta(hours=1), "test")
    audit = FakeEmitter()
    registry = LiveRegistry()
    config = NodeConfig(
        name=NODE,
        cluster=CLUSTER,
        host_id=NODE,
        host_key_pem=private_key_to_pem(host_key),
        host_cert=host.ssh_cert,
        user_ca_keys=tuple(host.ssh_user_ca),
        labels=labels if labels is not None else {"env": "dev"},
    )
    role_source = DictRoles(roles)
    locks = None
    if with_locks:
        locks = LockWatcher(
            clock=clock, audit=audit, registry=registry, roles=role_source.get_roles, grace=0
        )
    deps = NodeDeps(
        config=config,
        roles=role_source,
        audit=audit,
        registry=registry,
        clock=clock,
        locks=locks,
    )
    node = SSHNode(deps)
    return NodeHarness(
        node=node,
        audit=audit,
        registry=registry,
        clock=clock,
        fx=fx,
        host_ca_known_hosts=await fx.auth.export_ca("ssh_host"),
        tmp=tmp,
        locks=locks,
    )


class RawAccept(asyncio.Protocol):
    """Accepts TCP connections and hands each transport to ``SSHNode.accept`` (like the tunnel)."""

    def __init__(self, node: SSHNode, tasks: set[asyncio.Task[None]]) -> None:
        self._node = node
        self._tasks = tasks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = as_transport(transport)  # also uvloop's (no asyncio subclass)
        transport.pause_reading()  # until accept() has attached the SSH protocol
        peer = transport.get_extra_info("peername")
        task = asyncio.get_running_loop().create_task(self._node.accept(transport, peer[:2]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
