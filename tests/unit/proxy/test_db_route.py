"""Tests for bastion.proxy.db_route: startup, authorization and refusals as ErrorResponses."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bastion.clock import FakeClock
from bastion.errors import NotFound
from bastion.live.registry import LiveRegistry
from bastion.protocols.postgres import MessageReader, build_startup, parse_error_response
from bastion.proxy.db_route import DbRoute, DbRouteDeps
from bastion.tunnel.server import TunnelServer
from bastion.types.access import Role, RoleConditions, RoleSpec
from bastion.types.database import Database, DatabaseSpec
from bastion.types.identity import Identity, RouteToTarget
from bastion.types.meta import Metadata

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DB = Database(
    metadata=Metadata(name="pg1", labels={"env": "dev"}),
    spec=DatabaseSpec(uri="127.0.0.1:5432", host_id="agent-1"),
)
ROLE = Role(
    metadata=Metadata(name="dba"),
    spec=RoleSpec(
        allow=RoleConditions(
            db_labels={"env": "dev"}, db_users=["{{internal.db_users}}"], db_names=["postgres"]
        ),
        deny=RoleConditions(db_names=["secrets"]),
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
        if name != "pg1":
            raise NotFound(name)
        return DB


class Roles:
    async def get_roles(self, names: Sequence[str]) -> list[Role]:
        return [ROLE] if "dba" in names else []


def ident(route: RouteToTarget | None) -> Identity:
    return Identity(
        cluster="c",
        user="alice",
        roles=("dba",),
        traits={"db_users": ("alice_db",)},
        expires=NOW + timedelta(hours=1),
        route=route,
    )


async def serve(identity: Identity, early: bytes) -> tuple[dict[str, str], dict[str, Any]]:
    clock = FakeClock(NOW)
    registry = LiveRegistry()
    audit = Audit()
    route = DbRoute(
        DbRouteDeps(
            databases=Directory(),
            roles=Roles(),
            tunnel=TunnelServer(registry, clock),
            audit=audit,
            registry=registry,
            clock=clock,
            startup_timeout=1,
            connect_timeout=1,
        )
    )
    transport = FakeTransport()
    await route.handle(transport, identity, ("127.0.0.1", 5555), early)
    [message] = MessageReader().feed(bytes(transport.written))
    assert message.type == b"E" and transport.closed
    [event] = audit.events
    assert event["type"] == "db.session.start" and event["outcome"] == "failure"
    return parse_error_response(message.body), event


ROUTE = RouteToTarget(db_service="pg1", db_user="alice_db", db_name="postgres")


@pytest.mark.parametrize(
    ("route", "params", "words", "reason"),
    [
        (None, {"user": "alice_db"}, "not for a database", "without a database route"),
        (ROUTE, {"user": "postgres"}, 'for db user "alice_db", not "postgres"', ""),
        (ROUTE, {"user": "alice_db", "database": "x"}, 'for database "postgres", not "x"', ""),
        (
            ROUTE,
            {"user": "alice_db", "database": "postgres", "options": "-c role=admin"},
            "startup options",
            "",
        ),
        (RouteToTarget(db_service="nope"), {"user": "alice_db"}, 'database "nope" not found', ""),
        (
            RouteToTarget(db_service="pg1"),
            {"user": "root", "database": "postgres"},
            'as db user "root"',
            'db user "root" not in',
        ),
        (
            RouteToTarget(db_service="pg1"),
            {"user": "alice_db", "database": "secrets"},
            "denied",
            'denies db name "secrets"',
        ),
        (ROUTE, {"user": "alice_db", "database": "postgres"}, "offline", "offline"),
    ],
)
async def test_refusals_are_28000_error_responses(
    route: RouteToTarget | None, params: dict[str, str], words: str, reason: str
) -> None:
    fields, event = await serve(ident(route), build_startup(params))
    assert fields["C"] == "28000" and fields["S"] == "FATAL"
    assert words in fields["M"]
    assert reason in event["reason"]


async def test_second_sslrequest_refused() -> None:
    ssl_request = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
    fields, event = await serve(ident(ROUTE), ssl_request)
    assert "SSLRequest after TLS" in fields["M"]
    assert "SSLRequest" in event["reason"]


async def test_malformed_startup() -> None:
    fields, _ = await serve(ident(ROUTE), b"\x00\x00\x00\x04junk")
    assert "protocol violation" in fields["M"]


class BatchAudit(Audit):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def emit_many(self, specs: Sequence[tuple[str, str, dict[str, object]]]) -> list[None]:
        self.batches.append(len(specs))
        for event_type, outcome, fields in specs:
            self.events.append({"type": event_type, "outcome": outcome, **fields})
        return [None] * len(specs)


class CountingTransport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.paused = 0
        self.resumed = 0

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.resumed += 1


def _query(sql: str) -> bytes:
    body = sql.encode() + b"\x00"
    return b"Q" + (len(body) + 4).to_bytes(4, "big") + body


async def test_query_events_are_committed_in_order_in_batches_with_back_pressure() -> None:
    from bastion.protocols.postgres import StatementScanner, StatementTracker
    from bastion.proxy import db_route
    from bastion.proxy.relay import Relay

    audit = BatchAudit()
    route = _local_route(audit)
    relay = Relay(name="test")
    side = db_route._QuerySide(relay, StatementScanner(StatementTracker()), route)
    transport = CountingTransport()
    side.transport = transport
    count = db_route._HIGH_WATER + 10
    assert side.tap(b"".join(_query(f"select {i}") for i in range(count)))
    assert transport.paused == 1 and side.throttled  # the client waits for the audit writer
    side.ended = True  # the session ended: the writer drains everything, then returns
    info = {"db_service": "pg1", "db_user": "alice_db", "db_name": "postgres"}
    await route._audit_queries(side, ident(ROUTE), info, "s-1")
    queries = [e["query"] for e in audit.events]
    assert queries == [f"select {i}" for i in range(count)]
    assert max(audit.batches) == db_route._MAX_BATCH and sum(audit.batches) == count
    assert transport.resumed == 1 and not side.throttled
    assert audit.events[0]["db_user"] == "alice_db" and audit.events[0]["protocol"] == "simple"
    assert audit.events[0]["session_id"] == "s-1"  # the session's statements name it


async def test_copy_reports_are_stored_in_order_between_the_statements() -> None:
    from bastion.protocols.pgcopy import CopyReport
    from bastion.protocols.postgres import StatementScanner, StatementTracker
    from bastion.proxy import db_route
    from bastion.proxy.relay import Relay

    audit = BatchAudit()
    route = _local_route(audit)
    side = db_route._QuerySide(Relay(name="test"), StatementScanner(StatementTracker()), route)
    side.transport = CountingTransport()
    assert side.tap(_query("copy t to stdout"))
    side.copied([CopyReport("out", 12, 3, "success")])
    assert side.tap(_query("copy t from stdin"))
    side.copied([CopyReport("in", 5, None, "failure")])
    assert side.tap(_query("select 1"))
    side.ended = True
    info = {"db_service": "pg1", "db_user": "alice_db", "db_name": "postgres"}
    await route._audit_queries(side, ident(ROUTE), info, "s-1")
    kinds = [(e["type"], e["outcome"], e.get("query", e.get("direction"))) for e in audit.events]
    assert kinds == [
        ("db.session.query", "success", "copy t to stdout"),
        ("db.session.copy", "success", "out"),
        ("db.session.query", "success", "copy t from stdin"),
        ("db.session.copy", "failure", "in"),
        ("db.session.query", "success", "select 1"),
    ]
    assert audit.events[1]["rows"] == 3 and audit.events[3]["rows"] is None
    assert audit.events[1]["session_id"] == "s-1" and audit.events[1]["db_user"] == "alice_db"


class ServerTransport(FakeTransport):
    """The in-process agent's connection to the database (what the relay attaches to)."""

    def __init__(self) -> None:
        super().__init__()
        self.got = asyncio.Event()

    def write(self, data: Any) -> None:
        super().write(data)
        self.got.set()


class LocalAgent:
    """An agent in the proxy's process (DbRoute.add_local_agent): opens the database itself."""

    def __init__(self, refuse: bytes = b"") -> None:
        self.refuse = refuse
        self.headers: list[dict[str, Any]] = []
        self.server = ServerTransport()
        self.released = 0

    async def release(self) -> None:
        self.released += 1

    async def open(self, header: dict[str, Any]) -> Any:
        from types import SimpleNamespace

        from bastion.agent.db_service import SessionRefused

        self.headers.append(header)
        if self.refuse:
            raise SessionRefused("database down", self.refuse)
        return SimpleNamespace(
            server=self.server, to_server=b"STARTUP", to_client=b"", release=self.release
        )


def _local_route(audit: Audit) -> DbRoute:
    clock = FakeClock(NOW)
    registry = LiveRegistry()
    return DbRoute(
        DbRouteDeps(
            databases=Directory(), roles=Roles(), tunnel=TunnelServer(registry, clock),
            audit=audit, registry=registry, clock=clock, startup_timeout=1, connect_timeout=1,
        )
    )  # fmt: skip


async def test_an_in_process_agent_serves_the_session_without_the_tunnel() -> None:
    from bastion.protocols.postgres import build_message
    from bastion.tasks import spawn

    audit = Audit()
    route = _local_route(audit)
    agent = LocalAgent()
    route.add_local_agent("agent-1", agent)  # the database's host id
    client = FakeTransport()
    startup = build_startup({"user": "alice_db", "database": "postgres"})
    task = spawn(route.handle(client, ident(ROUTE), ("127.0.0.1", 5555), startup), "session")
    await asyncio.wait_for(agent.server.got.wait(), 5)
    assert bytes(agent.server.written) == b"STARTUP"  # the agent's StartupMessage goes first
    [header] = agent.headers
    assert header["db"] == "pg1" and header["params"]["user"] == "alice_db"
    assert header["user"] == "alice"
    server_side = agent.server.protocol
    assert isinstance(server_side, asyncio.Protocol)
    ready = build_message(b"Z", b"I")
    server_side.data_received(ready)  # the database's answer reaches the client
    server_side.connection_lost(None)  # the database closes: the session ends
    assert client.closed and isinstance(client.protocol, asyncio.Protocol)
    client.protocol.connection_lost(None)  # (what closing the client's transport does)
    await asyncio.wait_for(task, 5)
    assert ready in bytes(client.written) and client.closed
    assert agent.released == 1  # create_db_user's clean-up ran once the session ended
    assert [e["type"] for e in audit.events] == ["db.session.start", "db.session.end"]


async def test_an_in_process_agent_refusal_reaches_the_client_in_its_words() -> None:
    from bastion.protocols.postgres import error_response

    audit = Audit()
    route = _local_route(audit)
    agent = LocalAgent(refuse=error_response('database "pg1": down', code="08006"))
    route.add_local_agent("agent-1", agent)
    client = FakeTransport()
    startup = build_startup({"user": "alice_db", "database": "postgres"})
    await route.handle(client, ident(ROUTE), ("127.0.0.1", 5555), startup)
    [message] = MessageReader().feed(bytes(client.written))
    assert parse_error_response(message.body)["C"] == "08006" and client.closed
    [event] = audit.events
    assert event["type"] == "db.session.start" and event["outcome"] == "failure"
    assert "database down" in event["reason"]


async def test_audit_writers_share_one_tick() -> None:
    """The sessions' audit writers wake together (their batches meet in one group commit);
    a cancelled writer leaves the tick to the others."""
    from bastion.proxy.db_route import _Ticker
    from bastion.tasks import spawn

    ticker = _Ticker(0.0)
    woke: list[int] = []

    async def writer(n: int) -> None:
        await ticker.wait()
        woke.append(n)

    cancelled = spawn(ticker.wait(), "cancelled writer")
    tasks = [spawn(writer(n), f"writer {n}") for n in range(3)]
    await asyncio.sleep(0)
    assert ticker._next is not None
    first = ticker._next
    cancelled.cancel()
    await asyncio.gather(*tasks)
    assert sorted(woke) == [0, 1, 2] and first.done() and not first.cancelled()
    await ticker.wait()  # a new tick once the last one fired
    assert ticker._next is not first


async def test_mysql_load_data_local_is_reported_and_a_rogue_file_request_ends_the_session() -> (
    None
):
    """The MySQL sides of a session: a LOAD DATA LOCAL's file request, data and OK become a
    copy report after the statement; a request for a file the statement does not name never
    reaches the client, which gets an ERR, and the session ends."""
    from bastion.protocols import mysql
    from bastion.proxy import db_route
    from bastion.proxy.relay import Relay

    def sides() -> tuple[db_route._MySQLClientSide, db_route._MySQLServerSide, Relay]:
        relay = Relay(name="test")
        tracker = mysql.CommandTracker()
        client = db_route._MySQLClientSide(
            relay, tracker, mysql.PacketReader(), _local_route(BatchAudit()),
            lambda name: None, lambda sql, why: None,
        )  # fmt: skip
        server = db_route._MySQLServerSide(relay, tracker)
        server.client = client
        relay.a, relay.b = client, server
        client.peer, server.peer = server, client
        client.transport, server.transport = FakeTransport(), FakeTransport()
        return client, server, relay

    query = b"LOAD DATA LOCAL INFILE 'in.csv' INTO TABLE t"
    client, server, _ = sides()
    client.data_received(mysql.build_packet(0, b"\x03" + query))
    server.data_received(mysql.build_packet(1, b"\xfbin.csv"))
    client.data_received(mysql.build_packet(2, b"1,a\n2,b\n") + mysql.build_packet(3, b""))
    server.data_received(mysql.build_packet(4, b"\x00\x02\x00\x02\x00\x00\x00"))
    assert [getattr(s, "sql", None) for s in client.statements] == [
        query.decode(),
        "-- LOAD DATA LOCAL INFILE 'in.csv': 2 rows, 8 bytes",
    ]
    assert client.copies
    to_client = client.transport
    assert isinstance(to_client, FakeTransport)
    assert mysql.build_packet(1, b"\xfbin.csv") in to_client.written  # relayed as it came

    client, server, relay = sides()
    client.data_received(mysql.build_packet(0, b"\x03" + query))
    server.data_received(mysql.build_packet(1, b"\xfb/home/alice/.ssh/id_ed25519"))
    to_client = client.transport
    assert isinstance(to_client, FakeTransport)
    assert mysql.build_packet(1, b"\xfb/home/alice/.ssh/id_ed25519") not in to_client.written
    answer = mysql.PacketReader().feed(bytes(to_client.written))
    code, state, message = mysql.parse_err(answer[0].payload)
    assert answer[0].seq == 1 and state == "08S01" and "does not name" in message
    assert to_client.closed and relay.done and "does not name" in relay.reason


async def test_mysql_bulk_rows_are_audited_in_order_across_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A COM_STMT_BULK_EXECUTE of more rows than one batch: each row is a statement with its
    parameters, in order between the commands around it, decoded as the writer takes them;
    its bytes count for back-pressure (one queued item holds all its rows)."""
    import struct

    from bastion.protocols import mysql
    from bastion.proxy import db_route
    from bastion.proxy.relay import Relay

    monkeypatch.setattr(db_route, "_HIGH_BULK_BYTES", 1000)
    monkeypatch.setattr(db_route, "_LOW_BULK_BYTES", 100)
    audit = BatchAudit()
    route = _local_route(audit)
    tracker = mysql.CommandTracker()
    relay = Relay(name="test")
    client = db_route._MySQLClientSide(
        relay, tracker, mysql.PacketReader(), route, lambda name: None, lambda sql, why: None
    )
    server = db_route._MySQLServerSide(relay, tracker)
    relay.a, relay.b, client.peer, server.peer = client, server, server, client
    transport = client.transport = CountingTransport()
    server.transport = FakeTransport()
    client.data_received(mysql.build_packet(0, b"\x16insert into t values (?)"))
    tracker.server(mysql.Packet(1, b"\x00" + struct.pack("<IHHxH", 3, 0, 1, 0)))
    count = db_route._MAX_BATCH * 2 + 7
    rows = b"".join(b"\x00" + struct.pack("<i", n) for n in range(count))
    bulk = b"\xfa" + struct.pack("<IH", 3, 128) + b"\x03\x00" + rows
    client.data_received(mysql.build_packet(0, b"\x03select 1"))
    client.data_received(mysql.build_packet(0, bulk))
    client.data_received(mysql.build_packet(0, b"\x03select 2"))
    assert len(client.statements) == 3  # the bulk waits undecoded
    assert transport.paused == 1 and client.throttled and client.bulk_bytes == len(bulk) - 1
    client.ended = True
    info = {"db_service": "my1", "db_user": "alice_db", "db_name": "app"}
    await route._audit_queries(client, ident(ROUTE), info, "s-1")
    got = [(e["query"], e["parameters"], e["protocol"]) for e in audit.events]
    assert got == [
        ("select 1", [], "simple"),
        *[("insert into t values (?)", [str(n)], "bulk") for n in range(count)],
        ("select 2", [], "simple"),
    ]
    assert max(audit.batches) == db_route._MAX_BATCH
    assert audit.events[1]["parameter_types"] == ["LONG"]
    assert transport.resumed == 1 and not client.throttled and client.bulk_bytes == 0


async def test_audit_back_pressure_and_the_relays_flow_control_compose() -> None:
    """The client is read again only when the audit writer caught up and the database's side
    is not full: neither one's resume undoes the other's pause."""
    from bastion.protocols.postgres import StatementScanner, StatementTracker
    from bastion.proxy import db_route
    from bastion.proxy.relay import Relay, RelaySide

    audit = BatchAudit()
    route = _local_route(audit)
    relay = Relay(name="test")
    side = db_route._QuerySide(relay, StatementScanner(StatementTracker()), route)
    server = RelaySide(relay, "b")
    relay.a, relay.b, side.peer, server.peer = side, server, server, side
    transport = side.transport = CountingTransport()
    server.transport = FakeTransport()
    assert side.tap(b"".join(_query(f"select {i}") for i in range(db_route._HIGH_WATER + 1)))
    assert transport.paused == 1 and side.held
    server.pause_writing()  # the database's side is full too
    server.resume_writing()  # ...and drained: the audit still holds the client
    assert transport.resumed == 0
    server.pause_writing()
    side.ended = True
    info = {"db_service": "pg1", "db_user": "alice_db", "db_name": "postgres"}
    await route._audit_queries(side, ident(ROUTE), info, "s-1")
    assert not side.held and transport.resumed == 0  # the audit caught up; the server is full
    server.resume_writing()
    assert transport.resumed == 1


async def test_a_sessions_end_waits_for_its_audit_writer_while_it_makes_progress() -> None:
    """A writer storing a long bulk execute is waited for past one stall window; one that
    stores nothing in a window is given up, and its bulk rows count one by one as unaudited."""
    import struct
    from collections import deque

    from bastion.protocols import mysql
    from bastion.protocols.postgres import StatementScanner, StatementTracker
    from bastion.proxy import db_route
    from bastion.proxy.relay import Relay

    side = db_route._QuerySide(
        Relay(name="test"), StatementScanner(StatementTracker()), _local_route(BatchAudit())
    )
    loop = asyncio.get_running_loop()
    pump: asyncio.Future[None] = loop.create_future()
    windows: list[float] = []

    async def window(tasks: set[asyncio.Future[None]], timeout: float) -> None:
        """One stall window passes: the writer stores 100 in each of the first three, then
        is done."""
        windows.append(timeout)
        if len(windows) <= 3:
            side.stored += 100
        else:
            pump.set_result(None)

    await db_route._drained(pump, side, window)
    assert pump.done() and len(windows) == 4 and windows[0] == db_route._WRITER_STALL

    stuck: asyncio.Future[None] = loop.create_future()
    windows.clear()

    async def idle(tasks: set[asyncio.Future[None]], timeout: float) -> None:
        windows.append(timeout)

    await db_route._drained(stuck, side, idle)
    assert not stuck.done() and len(windows) == 1

    tracker = mysql.CommandTracker()
    tracker.client(mysql.Packet(0, b"\x16insert into t values (?)"))
    tracker.server(mysql.Packet(1, b"\x00" + struct.pack("<IHHxH", 3, 0, 1, 0)))
    rows = b"".join(b"\x00" + struct.pack("<i", n) for n in range(700))
    bulk = tracker.client(
        mysql.Packet(0, b"\xfa" + struct.pack("<IH", 3, 128) + b"\x03\x00" + rows)
    )
    assert isinstance(bulk, mysql.BulkExecute)
    bulk.take(200)
    pending: deque[Any] = deque([db_route.Statement("select 1"), bulk])
    assert db_route._unaudited(pending) == 1 + 500
    assert len(bulk.take(1000)) == 500  # counting kept its place
