"""The one-port proxy end to end on loopback: detection, TLS routing, mTLS per purpose, the SSH
route through a reverse tunnel and straight to TCP, the relay, limits and refusals.

Certificates are real (minted once per module by an AuthServer from ``make_auth``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.backend.memory import MemoryBackend
from bastion.ca import authority as ca_authority
from bastion.ca import x509 as ca_x509
from bastion.clock import SystemClock
from bastion.live.registry import LiveRegistry
from bastion.protocols.detect import build_proxy_header_v1, build_proxy_header_v2
from bastion.proxy import (
    ALPN_SSH,
    ALPN_TUNNEL,
    ListenerConfig,
    ListenerDeps,
    ProxyListener,
    ProxyTLS,
    SSHRoute,
    SSHRouteDeps,
)
from bastion.runtime import as_transport
from bastion.services.node_pins import NodePins
from bastion.testing import make_auth, new_public_key
from bastion.tunnel import MuxStream, TunnelClient, TunnelServer, client_tls_context
from bastion.types.access import Role, RoleConditions, RoleSpec
from bastion.types.identity import Identity
from bastion.types.inventory import Node, NodeSpec
from bastion.types.meta import Metadata

pytestmark = pytest.mark.integration

CLUSTER = "test.local"


@dataclass(frozen=True)
class KeyPair:
    cert: str
    key: str


@dataclass(frozen=True)
class Certs:
    user_ca: str
    host_ca: str
    proxy: KeyPair
    agent: KeyPair
    alice: KeyPair
    expired: KeyPair
    foreign: KeyPair
    user_ca_host: KeyPair
    """A host identity signed by the *user* CA: passes TLS, refused by our own check."""


def _key_pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def _mint() -> Certs:
    clock = SystemClock()
    fx = await make_auth(clock=clock, cluster=CLUSTER)
    issuer = fx.auth.issuer
    now = clock.now()
    hour = timedelta(hours=1)

    async def host(host_id: str, hostname: str, dns: list[str], ips: list[str]) -> KeyPair:
        key, pub = new_public_key()
        ident = Identity(
            cluster=CLUSTER,
            user=host_id,
            kind="host",
            host_id=host_id,
            traits={"hostname": (hostname,)},
            expires=now + hour,
        )
        certs = await issuer.issue_host(ident, pub, [host_id], dns, ips, hour, "127.0.0.1")
        return KeyPair(certs.tls_cert, _key_pem(key))

    proxy = await host("proxy-1", "proxy", ["localhost"], ["127.0.0.1"])
    agent = await host("host-1", "web1", [], [])
    alice_key, alice_pub = new_public_key()
    alice_id = Identity(
        cluster=CLUSTER, user="alice", roles=("dev",), logins=("root",), expires=now + hour
    )
    alice = await issuer.issue_user(alice_id, alice_pub, "127.0.0.1")
    # An expired certificate signed by the right CA.
    tls_user = await issuer.ca("tls_user")
    ca_cert = x509.load_pem_x509_certificate(tls_user.spec.active_keys[0].cert_pem.encode())
    old_key, _ = new_public_key()
    expired = ca_x509.issue_user_certificate(
        ca_cert,
        ca_authority.signing_key(tls_user, b"\x01" * 32),
        old_key.public_key(),
        alice_id.model_copy(update={"expires": now - timedelta(minutes=10)}),
        not_before=now - hour,
    )
    odd_key, _ = new_public_key()
    odd = ca_x509.issue_user_certificate(
        ca_cert,
        ca_authority.signing_key(tls_user, b"\x01" * 32),
        odd_key.public_key(),
        Identity(cluster=CLUSTER, user="mallory", kind="host", host_id="h", expires=now + hour),
        not_before=now - hour,
    )
    foreign_fx = await make_auth(clock=clock, cluster="evil.local")
    foreign_key, foreign_pub = new_public_key()
    foreign = await foreign_fx.auth.issuer.issue_user(
        alice_id.model_copy(update={"cluster": "evil.local"}), foreign_pub, "127.0.0.1"
    )
    return Certs(
        user_ca=alice.tls_user_ca,
        host_ca=alice.tls_host_ca,
        proxy=proxy,
        agent=agent,
        alice=KeyPair(alice.tls_cert, _key_pem(alice_key)),
        expired=KeyPair(
            expired.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(old_key)
        ),
        foreign=KeyPair(foreign.tls_cert, _key_pem(foreign_key)),
        user_ca_host=KeyPair(
            odd.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(odd_key)
        ),
    )


@pytest.fixture(scope="module")
def certs() -> Certs:
    return asyncio.run(_mint())


def client_ctx(certs: Certs, pair: KeyPair | None, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=certs.host_ca)
    if pair is not None:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "c.pem").write_text(pair.cert)
            (Path(tmp) / "k.pem").write_text(pair.key)
            ctx.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")
    ctx.set_alpn_protocols(alpn)
    return ctx


@dataclass
class FakeAudit:
    events: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)

    async def emit(self, event_type: str, *, outcome: str = "success", **fields: object) -> None:
        self.events.append((event_type, outcome, fields))

    def of(self, event_type: str) -> list[tuple[str, dict[str, object]]]:
        return [(o, f) for t, o, f in self.events if t == event_type]


@dataclass
class Directory:
    nodes: list[Node]

    async def list_nodes(self) -> list[Node]:
        return list(self.nodes)


class Roles:
    async def get_roles(self, names: Any) -> list[Role]:
        dev = Role(
            metadata=Metadata(name="dev"),
            spec=RoleSpec(allow=RoleConditions(logins=["root"], node_labels={"env": "dev"})),
        )
        return [dev] if "dev" in names else []


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = as_transport(transport)  # also uvloop's (no asyncio subclass)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False


@dataclass
class Env:
    certs: Certs
    listener: ProxyListener
    audit: FakeAudit
    registry: LiveRegistry
    tunnel: TunnelServer
    agent: TunnelClient
    headers: list[dict[str, Any]]
    echo_port: int
    pins: NodePins

    @property
    def port(self) -> int:
        return self.listener.port

    async def ssh(
        self, node: str, login: str = "root", pair: KeyPair | None = None, prefix: bytes = b""
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]]:
        ctx = client_ctx(self.certs, pair or self.certs.alice, [ALPN_SSH])
        sock = None
        if prefix:
            sock = socket.create_connection(("127.0.0.1", self.port))
            sock.sendall(prefix)
        async with asyncio.timeout(10):
            if sock is not None:
                reader, writer = await asyncio.open_connection(
                    sock=sock, ssl=ctx, server_hostname="localhost"
                )
            else:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, ssl=ctx, server_hostname="localhost"
                )
            writer.write(json.dumps({"node": node, "login": login}).encode() + b"\n")
            reply = json.loads(await reader.readline())
        return reader, writer, reply


@pytest.fixture
async def env(certs: Certs, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    clock = SystemClock()
    audit = FakeAudit()
    registry = LiveRegistry()
    tunnel = TunnelServer(registry, clock)
    loop = asyncio.get_running_loop()
    echo_server = await loop.create_server(Echo, "127.0.0.1", 0)
    echo_port = echo_server.sockets[0].getsockname()[1]
    nodes = [
        Node(
            metadata=Metadata(name="web1", labels={"env": "dev"}),
            spec=NodeSpec(host_id="host-1", tunnel=True),
        ),
        Node(
            metadata=Metadata(name="direct1", labels={"env": "dev"}),
            spec=NodeSpec(addr=f"127.0.0.1:{echo_port}", agentless=True),
        ),
        Node(
            metadata=Metadata(name="secret1", labels={"env": "prod"}),
            spec=NodeSpec(addr=f"127.0.0.1:{echo_port}"),
        ),
    ]
    pins = NodePins(MemoryBackend(clock))
    ssh = SSHRoute(
        SSHRouteDeps(
            nodes=Directory(nodes),
            roles=Roles(),
            tunnel=tunnel,
            audit=audit,
            registry=registry,
            clock=clock,
            cluster=CLUSTER,
            pins=pins,
        )
    )

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello web")

    web_server = web.Server(hello)
    overrides: dict[str, Any] = getattr(request, "param", {})
    config = ListenerConfig(port=0, **overrides)
    listener = ProxyListener(
        config,
        ListenerDeps(
            tls=ProxyTLS(certs.proxy.cert, certs.proxy.key, certs.user_ca, certs.host_ca),
            clock=clock,
            audit=audit,
            tunnel=tunnel,
            ssh=ssh,
            web=web_server,
        ),
    )
    headers: list[dict[str, Any]] = []

    def on_stream(stream: MuxStream, header: dict[str, Any]) -> None:
        headers.append({**header, "peername": stream.get_extra_info("peername")})
        stream.attach(Echo())

    async with listener:
        agent = TunnelClient(
            "127.0.0.1",
            listener.port,
            client_tls_context(certs.agent.cert, certs.agent.key, certs.host_ca),
            on_stream,
            server_hostname="localhost",
            backoff_base=0.05,
            backoff_cap=0.2,
        )
        async with agent:
            async with asyncio.timeout(10):
                await agent.wait_connected()
                while not tunnel.is_online("host-1"):
                    await asyncio.sleep(0.01)
            yield Env(certs, listener, audit, registry, tunnel, agent, headers, echo_port, pins)
        echo_server.close()
        await tunnel.close()


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    async with asyncio.timeout(10):
        return await reader.readexactly(len(data))


async def expect_closed(reader: asyncio.StreamReader, within: float = 10) -> None:
    async with asyncio.timeout(within):
        try:
            rest = await reader.read()
        except (ConnectionError, ssl.SSLError):
            return
    assert rest == b""


async def test_ssh_route_through_tunnel(env: Env) -> None:
    reader, writer, reply = await env.ssh("web1")
    assert reply == {"ok": True}
    assert await roundtrip(reader, writer, b"SSH-2.0-test\r\n") == b"SSH-2.0-test\r\n"
    header = env.headers[-1]
    assert header["type"] == "ssh" and header["login"] == "root" and header["user"] == "alice"
    assert header["peername"][0] == "127.0.0.1"
    live = [c for c in env.registry if c.kind == "ssh"]
    assert len(live) == 1 and live[0].target == "web1" and live[0].identity.user == "alice"
    assert any(c.kind == "tunnel" and c.target == "host-1" for c in env.registry)
    assert env.audit.of("proxy.ssh")[-1][0] == "success"
    # A lock (issue 6) ends it through the registry.
    await env.registry.terminate_matching(lambda c: c.kind == "ssh", "locked")
    await expect_closed(reader, 2)
    writer.close()


async def test_ssh_route_by_cluster_name_and_host_id(env: Env) -> None:
    for target in ("web1.test.local", "host-1"):
        reader, writer, reply = await env.ssh(target)
        assert reply == {"ok": True}
        assert await roundtrip(reader, writer, b"ping") == b"ping"
        writer.close()


async def test_ssh_route_direct_tcp(env: Env) -> None:
    reader, writer, reply = await env.ssh("direct1")
    assert reply == {"ok": True}
    assert await roundtrip(reader, writer, b"agentless") == b"agentless"
    writer.close()


async def test_relay_10mb_checksum(env: Env) -> None:
    reader, writer, reply = await env.ssh("web1")
    assert reply == {"ok": True}
    payload = os.urandom(10 * 1024 * 1024)

    async def send() -> None:
        for i in range(0, len(payload), 256 * 1024):
            writer.write(payload[i : i + 256 * 1024])
            await writer.drain()

    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        tg.create_task(send())
        received = await reader.readexactly(len(payload))
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    writer.close()


async def test_denied_node_is_not_found(env: Env) -> None:
    _, writer, hidden = await env.ssh("secret1")
    _, writer2, missing = await env.ssh("nope1")
    assert hidden == {"ok": False, "error": "node secret1 not found"}
    assert missing == {"ok": False, "error": "node nope1 not found"}
    failures = [f for o, f in env.audit.of("proxy.ssh") if o == "failure"]
    assert any("not visible" in str(f["reason"]) and f["target"] == "secret1" for f in failures)
    _, writer3, denied = await env.ssh("web1", login="postgres")
    assert denied["ok"] is False and "access denied" in denied["error"]
    for w in (writer, writer2, writer3):
        w.close()


async def test_a_node_served_by_another_host_is_refused_until_confirmed(env: Env) -> None:
    """A name re-joined by another host (its old record expired) is a different node, as a
    changed host key is to OpenSSH: refused, with the fix, until an admin confirms."""
    _, writer, reply = await env.ssh("web1")  # first sight pins host-1
    assert reply == {"ok": True}
    writer.close()
    await env.pins.confirm("web1", "host-0")  # as if web1 had been served by another host
    _, writer, refused = await env.ssh("web1")
    assert refused["ok"] is False and "bctl nodes confirm web1" in refused["error"]
    failures = [f for o, f in env.audit.of("proxy.ssh") if o == "failure"]
    assert "changed from 'host-0' to 'host-1'" in str(failures[-1]["reason"])
    writer.close()
    await env.pins.confirm("web1", "host-1")  # what bctl nodes confirm does
    _, writer, reply = await env.ssh("web1")
    assert reply == {"ok": True}
    writer.close()


async def test_tunnel_drop_mid_relay_closes_client_and_reconnects(env: Env) -> None:
    reader, writer, reply = await env.ssh("web1")
    assert reply == {"ok": True}
    assert await roundtrip(reader, writer, b"before") == b"before"
    session = env.agent.session
    assert session is not None
    session.abort("simulated network failure")
    await expect_closed(reader, 5)
    writer.close()
    async with asyncio.timeout(10):
        while env.agent.connects < 2 or not env.tunnel.is_online("host-1"):
            await asyncio.sleep(0.02)
    reader, writer, reply = await env.ssh("web1")
    assert reply == {"ok": True}
    assert await roundtrip(reader, writer, b"after") == b"after"
    writer.close()


async def test_plain_http_is_redirected(env: Env) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    writer.write(b"GET /web/login?x=1 HTTP/1.1\r\nHost: proxy.example.com:3080\r\n\r\n")
    async with asyncio.timeout(5):
        response = await reader.read()
    assert response.startswith(b"HTTP/1.1 308 ")
    assert b"Location: https://proxy.example.com:3080/web/login?x=1\r\n" in response
    writer.close()


async def test_web_route_served_in_process(env: Env) -> None:
    ctx = client_ctx(env.certs, None, ["http/1.1"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", env.port, ssl=ctx, server_hostname="localhost"
    )
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    async with asyncio.timeout(5):
        response = await reader.read()
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"hello web")
    writer.close()


@pytest.mark.parametrize("env", [{"trusted_proxy_sources": ("127.0.0.0/8",)}], indirect=True)
async def test_proxy_v2_from_trusted_source_sets_client_address(env: Env) -> None:
    header = build_proxy_header_v2(("203.0.113.9", 4444), ("10.0.0.1", 3080))
    reader, writer, reply = await env.ssh("web1", prefix=header)
    assert reply == {"ok": True}
    assert await roundtrip(reader, writer, b"x") == b"x"
    assert env.headers[-1]["client_addr"] == "203.0.113.9:4444"
    assert env.audit.of("proxy.ssh")[-1][1]["remote_addr"] == "203.0.113.9:4444"
    writer.close()
    v1 = build_proxy_header_v1(("198.51.100.1", 5555), ("10.0.0.1", 3080))
    reader, writer, reply = await env.ssh("web1", prefix=v1)
    assert reply == {"ok": True}
    assert await roundtrip(reader, writer, b"x") == b"x"  # the agent has seen the header
    assert env.headers[-1]["client_addr"] == "198.51.100.1:5555"
    writer.close()


async def test_proxy_header_from_untrusted_source_refused(env: Env) -> None:
    header = build_proxy_header_v2(("203.0.113.9", 4444), ("10.0.0.1", 3080))
    with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
        await env.ssh("web1", prefix=header)


@pytest.mark.parametrize(
    ("who", "alpn"),
    [
        ("foreign", ALPN_SSH),  # a client certificate from another CA
        ("expired", ALPN_SSH),
        ("agent", ALPN_SSH),  # a host certificate on the user route
        ("alice", ALPN_TUNNEL),  # a user certificate on the tunnel route
        (None, ALPN_SSH),  # no certificate at all
        ("alice", "bastion-unknown/7"),  # unknown ALPN
        ("user_ca_host", ALPN_SSH),  # passes the TLS handshake, refused by our own verification
    ],
)
async def test_refused_at_handshake(env: Env, who: str | None, alpn: str) -> None:
    pair = getattr(env.certs, who) if who else None
    ctx = client_ctx(env.certs, pair, [alpn])
    with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", env.port, ssl=ctx, server_hostname="localhost"
            )
            # TLS 1.3: the server's verdict on the client certificate arrives after the
            # client's side of the handshake completes, at the first read.
            writer.write(b'{"node": "web1", "login": "root"}\n')
            line = await reader.readline()
            if not line:
                raise ConnectionResetError("closed")
    rejected = env.audit.of("proxy.rejected")
    if who == "foreign":
        assert any("TLS handshake" in str(f["reason"]) for _, f in rejected)
    if who == "user_ca_host":
        assert any(
            f["user"] == "mallory" and "host identity" in str(f["reason"]) for _, f in rejected
        )
    assert not [c for c in env.registry if c.kind == "ssh"]


@pytest.mark.parametrize("env", [{"handshake_timeout": 1.5}], indirect=True)
async def test_slowloris_and_garbage_do_not_stall_real_clients(env: Env) -> None:
    loop = asyncio.get_running_loop()

    async def slow() -> asyncio.StreamReader:
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))  # another loopback source: its own per-IP budget
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", env.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"\x16")  # a TLS record type, then nothing for a long time
        slow_writers.append(writer)
        return reader

    slow_writers: list[asyncio.StreamWriter] = []
    slow_readers = [await slow() for _ in range(100)]
    garbage_reader, garbage_writer = await asyncio.open_connection("127.0.0.1", env.port)
    garbage_writer.write(b"\x00\xffgarbage that is no protocol at all\r\n")
    await expect_closed(garbage_reader, 1)
    # Beyond 64 per IP, connections are closed at once.
    await asyncio.sleep(0.2)
    closed_now = [r for r in slow_readers if r.at_eof() or r.exception() is not None]
    assert len(closed_now) >= 36
    # A real client gets through while the others hang.
    reader, writer, reply = await env.ssh("web1")
    assert reply == {"ok": True}
    assert await roundtrip(reader, writer, b"fast") == b"fast"
    hanging = [r for r in slow_readers if not r.at_eof()]
    assert len(hanging) >= 60
    for r in slow_readers:  # ... and they are all closed at the deadline
        await expect_closed(r, 4)
    assert env.listener.limiter.count("127.0.0.2") == 0
    for w in [*slow_writers, writer, garbage_writer]:
        w.close()
