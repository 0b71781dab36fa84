"""Tests for bastion.proxy.db_route, MySQL and cancel parts: handshake refusals as ERR 1045
packets, COM_INIT_DB checked against db_names before it is forwarded, unknown cancel keys."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.clock import FakeClock
from bastion.errors import NotFound
from bastion.live.registry import LiveRegistry
from bastion.protocols import mysql
from bastion.protocols.mysql_compress import FrameReader, FrameWriter
from bastion.proxy.db_route import DbRoute, DbRouteDeps, _MySQLClientSide
from bastion.proxy.relay import Relay
from bastion.tunnel.server import TunnelServer
from bastion.types.access import Role, RoleConditions, RoleSpec
from bastion.types.database import Database, DatabaseSpec
from bastion.types.identity import Identity, RouteToTarget
from bastion.types.meta import Metadata

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DBS = {
    "my1": Database(
        metadata=Metadata(name="my1", labels={"env": "dev"}),
        spec=DatabaseSpec(protocol="mysql", uri="127.0.0.1:3306", host_id="agent-1"),
    ),
    "pg1": Database(
        metadata=Metadata(name="pg1", labels={"env": "dev"}),
        spec=DatabaseSpec(uri="127.0.0.1:5432", host_id="agent-1"),
    ),
}
ROLE = Role(
    metadata=Metadata(name="dba"),
    spec=RoleSpec(
        allow=RoleConditions(
            db_labels={"env": "dev"}, db_users=["{{internal.db_users}}"], db_names=["app"]
        )
    ),
)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Audit:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def emit(self, event_type: str, *, outcome: str = "success", **fields: object) -> None:
        self.events.append({"type": event_type, "outcome": outcome, **fields})


class Directory:
    async def get_database(self, name: str) -> Database:
        if name not in DBS:
            raise NotFound(name)
        return DBS[name]


class Roles:
    async def get_roles(self, names: Sequence[str]) -> list[Role]:
        return [ROLE] if "dba" in names else []


def _route(audit: Audit) -> DbRoute:
    clock = FakeClock(NOW)
    registry = LiveRegistry()
    return DbRoute(
        DbRouteDeps(
            databases=Directory(), roles=Roles(), tunnel=TunnelServer(registry, clock),
            audit=audit, registry=registry, clock=clock, startup_timeout=1, connect_timeout=1,
        )
    )  # fmt: skip


def _hello(user: str, database: str = "") -> bytes:
    resp = mysql.HandshakeResponse(
        mysql.LOCAL_CAPABILITIES, 1 << 24, 45, user, b"", database, "mysql_native_password"
    )
    return mysql.build_packet(1, mysql.build_handshake_response(resp))


ROUTE = RouteToTarget(db_service="my1", db_user="alice_db")


@pytest.mark.parametrize(
    ("route", "user", "database", "words"),
    [
        (None, "alice_db", "", "not for a database"),
        (ROUTE, "root", "", 'for db user "alice_db", not "root"'),
        (RouteToTarget(db_service="my1"), "root", "", 'as db user "root"'),
        (ROUTE, "alice_db", "other", 'db name "other"'),
        (RouteToTarget(db_service="pg1", db_user="alice_db"), "alice_db", "", "MySQL"),
        (ROUTE, "alice_db", "app", "offline"),
    ],
)
async def test_handshake_refusals_are_err_1045(
    route: RouteToTarget | None, user: str, database: str, words: str
) -> None:
    audit = Audit()
    identity = Identity(
        cluster="c", user="alice", roles=("dba",), traits={"db_users": ("alice_db",)},
        expires=NOW + timedelta(hours=1), route=route,
    )  # fmt: skip
    transport = FakeTransport()
    await _route(audit).handle_mysql(transport, identity, ("127.0.0.1", 1), _hello(user, database))
    [packet] = mysql.PacketReader().feed(bytes(transport.written))
    code, state, message = mysql.parse_err(packet.payload)
    assert (packet.seq, code, state) == (2, 1045, "28000") and words in message
    assert transport.closed
    assert audit.events[-1]["type"] == "db.session.start"
    assert audit.events[-1]["outcome"] == "failure"


async def test_init_db_is_checked_before_it_is_forwarded() -> None:
    audit = Audit()
    relay = Relay()
    refused: list[tuple[str, str]] = []
    side = _MySQLClientSide(
        relay, mysql.CommandTracker(), mysql.PacketReader(), _route(audit),
        lambda name: None if name == "app" else f"db name {name} denied",
        lambda sql, why: refused.append((sql, why)),
    )  # fmt: skip
    client = FakeTransport()
    side.connection_made(client)
    allowed = mysql.build_packet(0, b"\x02app") + mysql.build_packet(0, b"\x03select 1")
    assert side.filter(allowed) == allowed
    denied = mysql.build_packet(0, b"\x02other")
    assert side.filter(allowed[:5]) == b""  # a partial packet waits for the rest
    assert side.filter(allowed[5:] + denied) == allowed
    [packet] = mysql.PacketReader().feed(bytes(client.written))
    assert mysql.parse_err(packet.payload)[:2] == (1044, "42000") and packet.seq == 1
    assert refused == [("USE `other`", "db name other denied")]
    assert [s.sql for s in side.statements] == ["USE `app`", "select 1"] * 2
    assert side.filter(mysql.build_packet(0, b"\x11root\x00")) == b""  # COM_CHANGE_USER


def _compressed_sides(
    check_name: Any = lambda name: None,
) -> tuple[_MySQLClientSide, Any, FakeTransport, FakeTransport]:
    """A compressing client's side (attached and wrapped, the handshake's OK relayed) and the
    database's side, with their transports."""
    from bastion.proxy.db_route import _MySQLServerSide

    relay = Relay()
    tracker = mysql.CommandTracker()
    client = _MySQLClientSide(
        relay, tracker, mysql.PacketReader(), _route(Audit()), check_name, lambda s, w: None
    )
    server = _MySQLServerSide(relay, tracker)
    server.client = client
    relay.a, relay.b, client.peer, server.peer = client, server, server, client
    to_client, to_server = FakeTransport(), FakeTransport()
    client.transport, server.transport = to_client, to_server
    client.compressed()
    client.wrap()
    ok = mysql.ok_packet(2)
    server.data_received(ok[:2])  # the handshake's answer, in pieces: as it is
    server.data_received(ok[2:])
    assert to_client.written == ok
    del to_client.written[:]
    return client, server, to_client, to_server


def _unframed(data: bytes) -> tuple[list[int], list[mysql.Packet]]:
    """The frames' sequence ids and the packets they carry."""
    reader = FrameReader()
    reader.feed(data)
    seqs, plain = [], b""
    while (chunk := reader.next()) is not None:
        seqs.append(reader.last_seq)
        plain += chunk
    return seqs, mysql.PacketReader().feed(plain)


async def test_a_compressing_clients_load_data_local_is_renumbered_for_the_database() -> None:
    """Connector/C numbers every packet inside a frame 0: the database's plain leg gets the
    numbers it expects (the file's packets after the server's request), the file is
    counted, and the answers go back in frames that follow the client's frame numbers."""
    client, server, to_client, to_server = _compressed_sides()
    frames = FrameWriter()
    query = b"\x03LOAD DATA LOCAL INFILE 'in.csv' INTO TABLE t"
    client.data_received(frames.frames(mysql.build_packet(0, query)))
    assert to_server.written == mysql.build_packet(0, query)
    server.data_received(mysql.build_packet(1, b"\xfbin.csv"))
    frames.seq = 2  # the client's frames go on after the server's (1)
    content = b"".join(mysql.build_packet(0, row) for row in (b"1,a\n", b"2,b\n", b""))
    client.data_received(frames.frames(content))
    assert to_server.written[len(mysql.build_packet(0, query)) :] == (
        mysql.build_packet(2, b"1,a\n") + mysql.build_packet(3, b"2,b\n")
        + mysql.build_packet(4, b"")
    )  # fmt: skip
    server.data_received(mysql.ok_packet(5, affected=2))
    seqs, packets = _unframed(bytes(to_client.written))
    assert seqs == [1, 3]  # the request answers frame 0, the OK frame 2
    assert [p.payload[:1] for p in packets] == [b"\xfb", b"\x00"]
    [statement, report] = list(client.statements)
    assert getattr(report, "bytes", None) == 8 and getattr(report, "rows", None) == 2


async def test_a_compressing_client_is_refused_in_frames() -> None:
    client, _, to_client, to_server = _compressed_sides(lambda name: f"db name {name} denied")
    client.data_received(FrameWriter().frames(mysql.build_packet(0, b"\x02other")))
    assert to_server.written == b""
    seqs, [packet] = _unframed(bytes(to_client.written))
    assert seqs == [1] and mysql.parse_err(packet.payload)[:2] == (1044, "42000")


async def test_a_compressing_clients_frames_are_read_a_megabyte_at_a_time() -> None:
    """Frames that inflate to far more than they weigh are read up to ~1 MiB of plain bytes
    per turn: the rest waits while the database's side is full, and goes on when it drains."""
    client, server, _, to_server = _compressed_sides()
    query = mysql.build_packet(0, b"\x03select '" + b"x" * 60_000 + b"'")
    frames = FrameWriter().frames(query * 50)  # ~3 MiB plain in ~9 KiB of frames
    assert len(frames) < 20_000
    server.pause_writing()  # the database's side is full
    client.data_received(frames)
    first = len(to_server.written)
    assert abs(first - (1 << 20)) < 70_000  # whole packets of the first ~1 MiB
    await asyncio.sleep(0)  # the rest is not read while the database's side is full
    assert len(to_server.written) == first
    server.resume_writing()  # it drained: the relay resumes the client, which reads on
    for _ in range(4):
        await asyncio.sleep(0)
    assert to_server.written == query * 50
    assert len(client.statements) == 50


async def test_cancel_with_an_unknown_key_is_refused() -> None:
    audit = Audit()
    assert not await _route(audit).cancel(1234, 5678, ("127.0.0.1", 9))
    assert audit.events[-1]["type"] == "db.session.cancel"
    assert audit.events[-1]["outcome"] == "failure"


_COMMANDS = st.one_of(
    st.tuples(
        st.just(0), st.sampled_from([0x03, 0x16, 0x17, 0x18, 0x19, 0xFA, 0x02, 0x11])
    ).flatmap(lambda t: st.binary(max_size=40).map(lambda b: (t[0], bytes([t[1]]) + b))),
    st.tuples(st.integers(0, 5), st.binary(max_size=40)),
    st.tuples(st.just(0), st.sampled_from([0x17, 0xFA])).flatmap(
        lambda t: st.binary(max_size=60).map(
            lambda b: (t[0], bytes([t[1]]) + struct.pack("<I", 1) + b)
        )
    ),
)
"""Client packets: commands the tracker decodes (with any body; executes and bulk executes of
statement 1 among them) and anything at all."""

_SIZES = {1: 1, 2: 2, 3: 4, 8: 8, 4: 4, 5: 8}
"""Fixed-size binary types (the others: a length byte and the bytes)."""


def _bulk_packet(types: list[int], rows: list[list[tuple[int, bytes]]]) -> tuple[int, bytes]:
    """A well-formed COM_STMT_BULK_EXECUTE of statement 1: ``types``, then per row and type an
    indicator (0: a value of that type follows, cut from the bytes given)."""
    body = struct.pack("<IH", 1, 128) + b"".join(bytes([t, 0]) for t in types)
    for row in rows:
        for code, (indicator, raw) in zip(types, row, strict=False):
            body += bytes([indicator])
            if indicator == 0:
                size = _SIZES.get(code)
                body += raw.ljust(size, b"\0")[:size] if size else bytes([len(raw)]) + raw
    return 0, b"\xfa" + body


_BULKS = st.builds(
    _bulk_packet,
    st.lists(st.sampled_from([1, 2, 3, 8, 4, 5, 253, 254, 252, 7, 10, 11, 12]), min_size=3,
             max_size=3),
    st.lists(
        st.lists(st.tuples(st.sampled_from([0, 0, 0, 1, 2, 3]), st.binary(max_size=12)),
                 min_size=3, max_size=3),
        max_size=20,
    ),
)  # fmt: skip
"""Bulk executes of a three-parameter statement 1 whose rows decode (dates and times from any
bytes), now and then cut short by the packet's end."""
_ANSWERS = st.tuples(
    st.integers(0, 5),
    st.one_of(
        st.binary(max_size=30),
        st.integers(0, 3).map(lambda n: b"\x00" + struct.pack("<IHHxH", 1, 0, n, 0)),
        st.just(b"\xfbin.csv"),
    ),
)
"""Server packets: anything, PREPARE_OK for statement 1, a LOAD DATA LOCAL file request."""


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 3),
    st.lists(st.tuples(st.booleans(), st.one_of(_COMMANDS, _BULKS), _ANSWERS), max_size=12),
)
def test_fuzz_the_mysql_sides_never_raise(params: int, steps: list[tuple[bool, Any, Any]]) -> None:
    """Any packets either way through the route's MySQL sides (prepares, executes, bulk
    executes, LOAD DATA LOCAL, garbage): no exception escapes a protocol callback, and the
    audit writer's batches hold only statements and copy reports, whatever the bulk rows."""
    asyncio.run(_through_the_sides(params, steps))


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 3),
    st.lists(st.tuples(st.booleans(), st.one_of(_COMMANDS, _BULKS), _ANSWERS), max_size=12),
)
def test_fuzz_the_mysql_sides_of_a_compressing_client(
    params: int, steps: list[tuple[bool, Any, Any]]
) -> None:
    """The same through a client that compresses: its packets arrive in frames (numbered
    anyhow), the answers leave in frames; nothing raises, only statements are audited."""
    asyncio.run(_through_the_sides(params, steps, compressed=True))


async def _through_the_sides(
    params: int, steps: list[tuple[bool, Any, Any]], *, compressed: bool = False
) -> None:
    from bastion.proxy import db_route
    from bastion.proxy.db_route import _MySQLServerSide, _take_batch

    relay = Relay()
    tracker = mysql.CommandTracker()
    client = _MySQLClientSide(
        relay, tracker, mysql.PacketReader(4096), _route(Audit()),
        lambda name: None, lambda sql, why: None,
    )  # fmt: skip
    server = _MySQLServerSide(relay, tracker)
    server.client = client
    relay.a, relay.b, client.peer, server.peer = client, server, server, client
    client.transport, server.transport = FakeTransport(), FakeTransport()
    frames = FrameWriter()
    if compressed:
        client.compressed()
        client.wrap()
        server.data_received(mysql.ok_packet(2))  # the handshake's answer, as it is

    def from_the_client(packet: bytes) -> None:
        client.data_received(frames.frames(packet) if compressed else packet)

    # Statement 1 is prepared with ``params`` parameters, then anything goes.
    from_the_client(mysql.build_packet(0, b"\x16insert into t values (?, ?, ?)"))
    server.data_received(mysql.build_packet(1, b"\x00" + struct.pack("<IHHxH", 1, 0, params, 0)))
    for from_client, (seq, payload), (server_seq, answer) in steps:
        if relay.done:
            break
        if from_client:
            from_the_client(mysql.build_packet(seq, payload))
        else:
            server.data_received(mysql.build_packet(server_seq, answer))
    bulk_bytes = client.bulk_bytes
    while client.statements:
        batch, bulk_bytes = _take_batch(client.statements, bulk_bytes)
        assert batch or not client.statements
        for item in batch:
            assert isinstance(item, db_route.Statement | db_route.CopyReport)
    assert bulk_bytes == 0
