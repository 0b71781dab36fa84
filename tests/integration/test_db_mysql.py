"""MySQL/MariaDB access end to end: a real MariaDB (TLS, ``REQUIRE SUBJECT`` accounts without
passwords), the real ``mariadb`` client and PyMySQL, through ``bsh proxy db``'s local listener,
the proxy's one port (ALPN ``bastion-mysql/1``) and a database agent on a real reverse tunnel.
One server and one cluster for the module: allowed and denied db user and db name (handshake,
``COM_INIT_DB``, ``USE``), audit of queries and prepared statements with their parameters, a
lock cutting a live ``SELECT SLEEP(30)``."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bastion.cli.bsh_db import local_mysql_listener
from bastion.client.tls import pem_context
from bastion.protocols import mysql
from bastion.protocols.alpn import ALPN_MYSQL
from bastion.testing import missing_peer, require_binary
from bastion.testing.mysql_rig import MySQLFiles, MySQLRig, start_mysql_rig
from bastion.testing.peers.mariadb import MariaDBUnavailable
from bastion.testing.peers.ports import free_port
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
from bastion.types.meta import Metadata

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


class World:
    def __init__(self, rig: MySQLRig) -> None:
        self.rig = rig
        self.servers: list[asyncio.Server] = []
        self.alice_port = 0

    async def local(self, db_user: str, name: str, server_version: str = "") -> int:
        """``bsh db login my1 --db-user U`` + ``bsh proxy db my1``: the local port
        (``server_version``: what ``bsh db ls`` lists for my1, once the agent saw its server)."""
        files: MySQLFiles = await self.rig.login(db_user, name)
        ctx = pem_context(
            files.ca.read_text(), files.crt.read_text(), alpn=[ALPN_MYSQL], key_file=files.key
        )
        server = await local_mysql_listener(
            f"127.0.0.1:{self.rig.port}", ctx, server_version=server_version
        )
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    require_binary("mariadb")
    try:
        async with start_mysql_rig(tmp_path_factory.mktemp("mysql")) as rig:
            world = World(rig)
            world.alice_port = await world.local("alice_db", "alice")
            yield world
            for server in world.servers:
                server.close()
    except MariaDBUnavailable as exc:
        missing_peer(str(exc))


async def _mariadb(port: int, user: str, sql: str, *more: str) -> tuple[int, str, str]:
    """``mariadb ... -e sql`` and ``more`` (a database, options)."""
    proc = await asyncio.create_subprocess_exec(
        require_binary("mariadb"), "--no-defaults", "-h127.0.0.1", f"-P{port}", f"-u{user}",
        "--skip-ssl", "-N", "-B", "-e", sql, *more,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def _until(check: Callable[[], bool], timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def _queries(rig: MySQLRig) -> list[dict[str, Any]]:
    return rig.audit.of("db.session.query")


async def test_mariadb_client_allowed_denied_and_audited(world: World) -> None:
    rig, port = world.rig, world.alice_port
    code, out, err = await _mariadb(
        port, "alice_db", "select x, s from t order by x; select current_user()", "app"
    )
    assert code == 0, err
    assert out.split() == ["1", "a", "2", "b", "alice_db@%"]
    start = rig.audit.of("db.session.start")[-1]
    assert start["outcome"] == "success" and start["db_user"] == "alice_db"
    await _until(lambda: bool(rig.audit.of("db.session.end")))
    assert "select x, s from t order by x" in [q["query"] for q in _queries(rig)]
    assert rig.audit.of("db.session.end")[-1]["bytes_out"] > 0

    # USE of a database db_names does not allow: ERR 1044, never reaches the server (which
    # would allow it: alice_db has grants on `other`).
    code, out, err = await _mariadb(port, "alice_db", "use other; select database()", "app")
    assert code != 0 and "ERROR 1044" in err and 'db name "other" denied' in err
    # ...and as the connection's database: refused at the handshake (1045, one line).
    code, out, err = await _mariadb(port, "alice_db", "select 1", "other")
    assert code != 0 and "ERROR 1045 (28000)" in err and "denied" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

    # A db user no role allows (the certificate names admin_db): one clean 1045 line.
    admin_port = await world.local("admin_db", "admin")
    code, out, err = await _mariadb(admin_port, "admin_db", "select 1")
    assert code != 0 and "ERROR 1045 (28000)" in err and 'db user "admin_db"' in err
    refusal = rig.audit.of("db.session.start")[-1]
    assert refusal["outcome"] == "failure" and "admin_db" in refusal["reason"]


async def test_load_data_local_is_loaded_and_audited(world: World, tmp_path: Path) -> None:
    """``mariadb --local-infile``'s LOAD DATA LOCAL through the proxy: the rows reach the
    table; ``db.session.copy`` follows the statement with the file's bytes, the rows the
    server loaded and the file it asked for; a file the client cannot read sends no bytes.
    (With LOCAL the server turns bad rows into warnings: the unit tests feed it an ERR.)"""
    rig, port = world.rig, world.alice_port
    data = tmp_path / "in.csv"
    data.write_text("".join(f"{n},r{n}\n" for n in range(100, 400)))
    load = f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE t FIELDS TERMINATED BY ','"
    code, out, err = await _mariadb(
        port, "alice_db", f"{load}; select count(*) from t where x >= 100", "app",
        "--local-infile=1",
    )  # fmt: skip
    assert code == 0, err
    assert out.split() == ["300"]
    await _until(lambda: bool(rig.audit.of("db.session.copy")))
    (copy,) = rig.audit.of("db.session.copy")
    assert copy["outcome"] == "success" and copy["direction"] == "in"
    assert copy["bytes"] == data.stat().st_size and copy["rows"] == 300
    assert copy["file"] == str(data) and copy["db_user"] == "alice_db"
    session = [e for e in rig.audit.events if e.get("session_id") == copy["session_id"]]
    statements = [(e["type"], e.get("query")) for e in session if e["type"] != "db.session.start"]
    at = statements.index(("db.session.query", load))
    assert statements[at + 1] == ("db.session.copy", None)  # right after its statement

    # A file the client cannot read: it sends none, the server loads nothing.
    missing = tmp_path / "missing.csv"
    code, out, err = await _mariadb(
        port, "alice_db", f"LOAD DATA LOCAL INFILE '{missing}' INTO TABLE t", "app",
        "--local-infile=1",
    )  # fmt: skip
    assert code != 0 and "missing.csv" in err, err
    await _until(lambda: len(rig.audit.of("db.session.copy")) == 2)
    nothing = rig.audit.of("db.session.copy")[-1]
    assert nothing["bytes"] == 0 and nothing["rows"] == 0 and nothing["file"] == str(missing)
    await _mariadb(port, "alice_db", "delete from t where x >= 100 or x is null", "app")


async def test_bsh_db_connect_runs_mariadb_with_the_option_file(
    world: World, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from types import SimpleNamespace

    from bastion.cli.bsh_db import _run_mysql_client, mysql_option_file

    files = await world.rig.login("alice_db", "connect")
    base = tmp_path / "my1"
    Path(f"{base}.my.cnf").write_text(mysql_option_file("my1", "alice_db", "app"))
    ctx = pem_context(
        files.ca.read_text(), files.crt.read_text(), alpn=[ALPN_MYSQL], key_file=files.key
    )
    profile: Any = SimpleNamespace(proxy=f"127.0.0.1:{world.rig.port}")
    args = ("-N", "-e", "select database(), current_user()")
    code = await _run_mysql_client(profile, ctx, require_binary("mariadb"), base, args)
    assert code == 0
    assert "app\talice_db@%" in capfd.readouterr().out


async def test_pymysql_init_db_and_prepared_statements(world: World) -> None:
    import pymysql

    rig, port = world.rig, world.alice_port

    def run() -> tuple[Any, ...]:
        conn = pymysql.connect(
            host="127.0.0.1", port=port, user="alice_db", database="app", connect_timeout=15
        )
        try:
            with conn.cursor() as cur:
                cur.execute("select s from t where x = %s", (2,))
                row = cur.fetchone()
            try:
                conn.select_db("other")  # COM_INIT_DB
                denied = None
            except pymysql.err.OperationalError as exc:
                denied = exc.args
            conn.select_db("app")
            # The binary protocol: COM_STMT_PREPARE, then COM_STMT_EXECUTE with two parameters.
            conn._execute_command(0x16, "update t set s = ? where x = ?")
            ok = conn._read_packet()
            stmt_id, columns, params = struct.unpack("<xIHH", ok.get_all_data()[:9])
            for _ in range(params + (1 if params else 0) + columns + (1 if columns else 0)):
                conn._read_packet()
            body = struct.pack("<IBI", stmt_id, 0, 1) + b"\x00\x01" + bytes([253, 0, 8, 0])
            body += b"\x03zzz" + struct.pack("<q", 1)
            conn._execute_command(0x17, body)
            result = conn._read_packet().get_all_data()
            return row, denied, result[:1]
        finally:
            conn.close()

    row, denied, result = await asyncio.to_thread(run)
    assert row == ("b",)
    assert denied is not None and denied[0] == 1044 and "other" in denied[1]
    assert result == b"\x00"  # OK: one row updated
    await _until(
        lambda: any(
            q["query"] == "update t set s = ? where x = ?"
            and q["parameters"] == ["zzz", "1"]
            and q["parameter_types"] == ["VAR_STRING", "LONGLONG"]
            for q in _queries(rig)
        )
    )
    assert any(q["query"] == "select s from t where x = 2" for q in _queries(rig))
    refused = [q for q in _queries(rig) if q["outcome"] == "failure"]
    assert any(q["query"] == "USE `other`" for q in refused)


async def test_mariadb_connector_bulk_insert_audits_every_row(world: World) -> None:
    """The agent learned the server's greeting version (MariaDB) from the earlier sessions;
    greeted as that server, MariaDB Connector/Python's ``executemany`` sends one
    COM_STMT_BULK_EXECUTE: the rows are inserted, and each is a ``db.session.query`` with its
    parameters; a NULL stays null. Greeted as a MySQL server (or unknown), the connector
    executes row by row (no MariaDB-only command reaches a server that may not have it)."""
    import mariadb

    rig = world.rig
    assert rig.agent is not None
    version = rig.agent.server_versions["my1"]
    assert version.startswith("5.5.5-") and "MariaDB" in version
    port = await world.local("alice_db", "bulk", server_version=version)
    rows = [(1000 + n, f"bulk{n}" if n % 50 else None) for n in range(300)]

    def run(port: int = port, **tls: str) -> tuple[Any, ...]:
        conn = mariadb.connect(
            host="127.0.0.1", port=port, user="alice_db", database="app", connect_timeout=15,
            **tls,
        )  # fmt: skip
        try:
            cur = conn.cursor()
            cur.executemany("insert into t values (?, ?)", rows)
            conn.commit()
            cur.execute("select count(*), count(s) from t where x >= 1000")
            counted = cur.fetchone()
            cur.execute("delete from t where x >= 1000")
            conn.commit()
            return counted, conn.server_info
        finally:
            conn.close()

    counted, shown = await asyncio.to_thread(run)
    assert counted == (300, 294) and shown == version.removeprefix("5.5.5-")

    def bulk() -> list[dict[str, Any]]:
        return [q for q in _queries(rig) if q["protocol"] == "bulk"]

    await _until(lambda: len(bulk()) >= 300)
    got = bulk()
    assert [q["query"] for q in got] == ["insert into t values (?, ?)"] * 300
    assert [q["parameters"] for q in got] == [[str(x), s] for x, s in rows]
    int_type, text_type = got[0]["parameter_types"]  # the connector's choice of binary types
    assert int_type in ("SHORT", "LONG", "LONGLONG") and text_type in ("STRING", "VAR_STRING")
    assert all(q["outcome"] == "success" and q["db_user"] == "alice_db" for q in got)

    # The proxy's MySQL port greets as configured (proxy_service.mysql_server_version: the rig
    # names its MariaDB), so it offers bulk execution too.
    files = await rig.login("alice_db", "bulk-port")
    tls = {"ssl_cert": str(files.crt), "ssl_key": str(files.key), "ssl_ca": str(files.ca)}
    counted, _ = await asyncio.to_thread(run, rig.mysql_port, **tls)
    assert counted == (300, 294)
    await _until(lambda: len(bulk()) >= 600)

    for other in ("8.0.36", ""):  # a MySQL server, or not seen yet: no bulk offered
        before = len(_queries(rig))
        counted, _ = await asyncio.to_thread(
            run, await world.local("alice_db", f"bulk-{other}", server_version=other)
        )
        assert counted == (300, 294)

        def inserts(before: int = before) -> list[dict[str, Any]]:
            return [q for q in _queries(rig)[before:] if q["query"].startswith("insert")]

        await _until(lambda: len(inserts()) >= 300)
        assert len(inserts()) == 300 and {q["protocol"] for q in inserts()} == {"prepared"}


async def test_prepared_results_leave_out_the_metadata_the_client_has(world: World) -> None:
    """Greeted as the rig's MariaDB (10.6 or later: cached and extended metadata), MariaDB
    Connector/Python's prepared SELECT (binary protocol) comes back without the column
    definitions the client already has, and every row is right, through ``bsh proxy db`` and
    through the proxy's MySQL port. Greeted generically (the server not seen yet) or as a
    MariaDB without the cache, each execute's result carries its column definitions again."""
    import mariadb

    rig = world.rig
    assert rig.agent is not None
    version = rig.agent.server_versions["my1"]
    assert (mysql.mariadb_version(version) or (0, 0)) >= (10, 6)
    columns = ", ".join(f"x + {n} as metadata_column_{n}" for n in range(24))
    sql = f"select {columns} from t where x = ?"
    executes = 60

    def run(port: int, **tls: str) -> list[tuple[Any, ...]]:
        conn = mariadb.connect(
            host="127.0.0.1", port=port, user="alice_db", database="app", connect_timeout=15,
            **tls,
        )  # fmt: skip
        try:
            cur = conn.cursor(binary=True, prepared=True)
            rows = []
            for _ in range(executes):
                cur.execute(sql, (1,))
                rows.append(cur.fetchone())
            return rows
        finally:
            conn.close()

    def sent_by_database(sessions_before: set[str]) -> int:
        """bytes_out of the one session that ran ``sql`` since ``sessions_before``."""
        ran = {q["session_id"] for q in _queries(rig) if q["query"] == sql} - sessions_before
        assert len(ran) == 1
        (session,) = ran
        ends = [e for e in rig.audit.of("db.session.end") if e["session_id"] == session]
        assert len(ends) == 1
        return int(ends[0]["bytes_out"])

    def sessions() -> set[str]:
        return {q["session_id"] for q in _queries(rig) if q["query"] == sql}

    async def measure(port: int, **tls: str) -> int:
        before = sessions()
        rows = await asyncio.to_thread(run, port, **tls)
        assert rows == [tuple(1 + n for n in range(24))] * executes
        await _until(lambda: len(sessions() - before) == 1)
        (new,) = sessions() - before
        await _until(lambda: any(e["session_id"] == new for e in rig.audit.of("db.session.end")))
        return sent_by_database(before)

    cached = await measure(await world.local("alice_db", "meta", server_version=version))
    plain = await measure(await world.local("alice_db", "meta-generic", server_version=""))
    files = await rig.login("alice_db", "meta-port")
    tls = {"ssl_cert": str(files.crt), "ssl_key": str(files.key), "ssl_ca": str(files.ca)}
    port = await measure(rig.mysql_port, **tls)
    # Greeted as MariaDB 10.5 (bulk execution, no cached metadata): the database is not asked
    # for the cache, whose answers the client would not parse.
    older = await measure(await world.local("alice_db", "meta-10.5", "5.5.5-10.5.9-MariaDB"))
    assert older == plain
    # The connector prepares again before each execute (the prepare's answer has the column
    # definitions either way); without the cache each execute's result has them once more:
    # 24 definitions of ~40 bytes.
    saved = executes * 24 * 30
    assert plain - cached >= saved and plain - port >= saved, (cached, port, plain)


class _RawClient:
    """A MySQL client speaking the protocol itself (:mod:`bastion.protocols.mysql`), to ask
    for MariaDB's progress reports and see each packet; the server is the rig's real MariaDB."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.packets = mysql.PacketReader(1 << 26)
        self.queue: list[mysql.Packet] = []

    async def next(self) -> mysql.Packet:
        while not self.queue:
            chunk = await asyncio.wait_for(self.reader.read(65536), 60)
            assert chunk, "the proxy closed the connection"
            self.queue.extend(self.packets.feed(chunk))
        return self.queue.pop(0)

    async def query(self, sql: str) -> list[mysql.Packet]:
        """Send ``sql``; its answer up to the first OK or ERR that ends it (progress reports
        included)."""
        self.writer.write(mysql.build_packet(0, bytes([mysql.COM_QUERY]) + sql.encode()))
        answer = [await self.next()]
        while mysql.is_progress_report(answer[-1].payload):
            answer.append(await self.next())
        return answer

    async def rows(self, sql: str) -> list[list[str | None]]:
        """A text result set's rows (without CLIENT_DEPRECATE_EOF: two EOF packets)."""
        (first,) = await self.query(sql)
        columns, eofs, rows = first.payload[0], 0, []
        while eofs < 2:
            packet = await self.next()
            if packet.payload[:1] == b"\xfe" and len(packet.payload) < 9:
                eofs += 1
            elif eofs == 1:
                rows.append(mysql.parse_text_row(packet.payload, columns))
        return rows


async def test_progress_reports_reach_a_client_that_asks(world: World) -> None:
    """A client that asks for MariaDB's progress reports (greeted as the rig's MariaDB) gets
    them during a long ALTER TABLE, numbered in order before the statement's OK, and the
    session goes on (the proxy read the answer after them as the answer); the statement is
    audited once."""
    rig = world.rig
    assert rig.agent is not None
    port = await world.local("alice_db", "progress", rig.agent.server_versions["my1"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = _RawClient(reader, writer)
    try:
        greeting = mysql.parse_handshake((await client.next()).payload)
        assert greeting.capabilities & mysql.MARIADB_CLIENT_PROGRESS
        caps = (
            mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION | mysql.CLIENT_PLUGIN_AUTH
            | mysql.CLIENT_CONNECT_WITH_DB | mysql.MARIADB_CLIENT_PROGRESS
        )  # fmt: skip
        hello = mysql.HandshakeResponse(
            caps, 1 << 24, 45, "alice_db", b"", "app", "mysql_native_password"
        )
        writer.write(mysql.build_packet(1, mysql.build_handshake_response(hello)))
        assert (await client.next()).payload[:1] == b"\x00"
        for sql in (
            "set session progress_report_time = 1",
            "drop table if exists progress_big",
            "create table progress_big (x int, s varchar(40)) engine=innodb",
            "insert into progress_big select seq, repeat('p', 30) from seq_1_to_1500000",
        ):
            (ok,) = await client.query(sql)
            assert ok.payload[:1] == b"\x00", mysql.parse_err(ok.payload)
        alter = "alter table progress_big add column y int default 7, algorithm=copy"
        *progress, done = await client.query(alter)
        assert done.payload[:1] == b"\x00", mysql.parse_err(done.payload)
        assert progress, "no progress report in a long ALTER TABLE"
        assert [p.seq for p in progress] == list(range(1, len(progress) + 1))
        assert done.seq == len(progress) + 1
        assert await client.rows("select count(*), min(y) from progress_big") == [["1500000", "7"]]
        (dropped,) = await client.query("drop table progress_big")
        assert dropped.payload[:1] == b"\x00"
    finally:
        writer.close()
    await _until(lambda: sum(q["query"] == alter for q in _queries(rig)) == 1)


async def test_compressed_clients_are_read_and_audited(world: World, tmp_path: Path) -> None:
    """``mariadb --compress`` through ``bsh proxy db``: the client reads a compressed
    protocol, its queries are audited, a refusal arrives in its frames, a big result and a
    LOAD DATA LOCAL file go through whole; MariaDB Connector/Python with ``compress=True`` on
    the proxy's MySQL port pipelines its prepared statements and bulk inserts compressed;
    MySQL Connector/Python (another reader of frames) gets big answers and loads a file."""
    import mariadb

    rig, port = world.rig, world.alice_port
    big = "select repeat('bastion', 100000), 42"
    code, out, err = await _mariadb(port, "alice_db", f"status; {big}", "app", "--compress")
    assert code == 0, err
    assert "Compressed" in out  # the client's own status: its protocol
    assert out.split()[-2:] == ["bastion" * 100000, "42"]
    await _until(lambda: big in [q["query"] for q in _queries(rig)])

    code, out, err = await _mariadb(port, "alice_db", "use other", "app", "--compress")
    assert code != 0 and "ERROR 1044" in err and 'db name "other" denied' in err

    data = tmp_path / "in.csv"
    data.write_text("".join(f"{n},row {n} {'z' * 200}\n" for n in range(5000, 15000)))
    load = f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE t FIELDS TERMINATED BY ','"
    copies = len(rig.audit.of("db.session.copy"))
    code, out, err = await _mariadb(
        port, "alice_db", f"{load}; select count(*) from t where x >= 5000", "app",
        "--local-infile=1", "--compress",
    )  # fmt: skip
    assert code == 0, err
    assert out.split() == ["10000"]
    await _until(lambda: len(rig.audit.of("db.session.copy")) > copies)
    copy = rig.audit.of("db.session.copy")[-1]
    assert copy["bytes"] == data.stat().st_size and copy["rows"] == 10000

    files = await rig.login("alice_db", "compressed-port")
    rows = [(20000 + n, f"c{n}") for n in range(200)]

    def run() -> tuple[Any, ...]:
        conn = mariadb.connect(
            host="127.0.0.1", port=rig.mysql_port, user="alice_db", database="app",
            ssl_cert=str(files.crt), ssl_key=str(files.key), ssl_ca=str(files.ca),
            compress=True, connect_timeout=15,
        )  # fmt: skip
        try:
            cur = conn.cursor()
            cur.executemany("insert into t values (?, ?)", rows)
            cur.execute("select count(*), sum(x >= 20000) from t where x >= ?", (5000,))
            counted = cur.fetchone()
            cur.execute("delete from t where x >= 5000")
            conn.commit()
            return counted
        finally:
            conn.close()

    before = len(_queries(rig))
    assert await asyncio.to_thread(run) == (10200, 200)

    def inserts() -> list[dict[str, Any]]:
        return [q for q in _queries(rig)[before:] if q["query"].startswith("insert")]

    await _until(lambda: len(inserts()) >= 200)
    assert [q["parameters"] for q in inserts()] == [[str(x), s] for x, s in rows]

    # MySQL Connector/Python (Oracle's, pure Python) reads at most one more frame to finish a
    # packet: the proxy's frames end at packet boundaries, as a server's do.
    import mysql.connector

    def oracle() -> tuple[Any, ...]:
        conn = mysql.connector.connect(
            host="127.0.0.1", port=port, user="alice_db", database="app", compress=True,
            use_pure=True, ssl_disabled=True, allow_local_infile=True, connection_timeout=15,
        )  # fmt: skip
        try:
            cur = conn.cursor()
            cur.execute(big)
            long, n = cur.fetchone()
            prepared = conn.cursor(prepared=True)
            prepared.execute("select ? + 1, ?", (41, "p" * 3000))
            answer, text = prepared.fetchone()
            cur.execute(load)
            loaded = cur.rowcount
            cur.execute("delete from t where x >= 5000")
            conn.commit()
            return len(long), n, answer, len(text), loaded
        finally:
            conn.close()

    copies = len(rig.audit.of("db.session.copy"))
    assert await asyncio.to_thread(oracle) == (700_000, 42, 42, 3000, 10_000)
    await _until(lambda: len(rig.audit.of("db.session.copy")) > copies)
    assert rig.audit.of("db.session.copy")[-1]["rows"] == 10_000


async def test_dedicated_mysql_port_takes_the_user_certificate(world: World) -> None:
    rig = world.rig
    files = await rig.login("alice_db", "port")
    proc = await asyncio.create_subprocess_exec(
        require_binary("mariadb"), "--no-defaults", "-h127.0.0.1", f"-P{rig.mysql_port}",
        "-ualice_db", f"--ssl-cert={files.crt}", f"--ssl-key={files.key}",
        f"--ssl-ca={files.ca}", "-N", "-B", "-e", "select current_user(), database()", "app",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["alice_db@%", "app"]
    # Without TLS (no certificate): refused before anything reaches the route.
    code, _, err_s = await _mariadb(rig.mysql_port, "alice_db", "select 1", "app")
    assert code != 0 and "client certificate is required" in err_s


async def test_provisioned_user_has_exactly_the_roles_db_roles(world: World) -> None:
    """create_db_user on MariaDB: created with the roles' db_roles (the first one its default),
    locked after the session, and at the next connection a role that no Bastion role lists
    any more is revoked."""
    rig = world.rig
    auth = rig.certs._auth  # noqa: SLF001 - the rig's auth server

    def role(db_roles: list[str]) -> Role:
        return Role(
            metadata=Metadata(name="auto-my"),
            spec=RoleSpec(
                options=RoleOptions(create_db_user=True),
                allow=RoleConditions(db_labels={"env": "dev"}, db_names=["app"], db_roles=db_roles),
            ),
        )

    def held() -> str:
        return rig.server.sql(
            "SELECT (SELECT GROUP_CONCAT(Role ORDER BY Role) FROM mysql.roles_mapping WHERE "
            "User = 'dora'), (SELECT IFNULL(JSON_VALUE(Priv, '$.account_locked'), 0) FROM "
            "mysql.global_priv WHERE User = 'dora')"
        ).strip()

    await auth.roles.upsert(role(["reader", "tagger"]))
    await auth.users.create(
        User(metadata=Metadata(name="dora"), spec=UserSpec(roles=["auto-my"], epoch="e1"))
    )
    dora = rig.alice.model_copy(
        update={"user": "dora", "roles": ("auto-my",), "traits": {}, "user_epoch": "e1"}
    )
    files = await rig.login("dora", "dora", identity=dora)
    ctx = pem_context(
        files.ca.read_text(), files.crt.read_text(), alpn=[ALPN_MYSQL], key_file=files.key
    )
    server = await local_mysql_listener(f"127.0.0.1:{rig.port}", ctx)
    world.servers.append(server)
    port = int(server.sockets[0].getsockname()[1])

    code, out, err = await _mariadb(
        port, "dora", "SET ROLE tagger; INSERT INTO t VALUES (3, 'd'); SET ROLE reader; "
        "SELECT COUNT(*) FROM t", "app",
    )  # fmt: skip
    assert code == 0, err
    assert out.split() == ["3"]
    created = [e for e in rig.audit.of("db.user.create") if e["db_user"] == "dora"]
    assert created[-1]["reason"] == "created" and created[-1]["db_roles"] == ["reader", "tagger"]
    await _until(lambda: held() == "reader,tagger\t1", 30)  # locked after the session

    await auth.roles.upsert(role(["reader"]))
    code, _, err = await _mariadb(port, "dora", "SET ROLE tagger", "app")
    assert code != 0 and "tagger" in err, err
    enabled = [e for e in rig.audit.of("db.user.create") if e["db_user"] == "dora"][-1]
    assert enabled["reason"] == "enabled" and enabled["db_roles_revoked"] == ["tagger"]
    code, out, err = await _mariadb(port, "dora", "SELECT COUNT(*) FROM t", "app")
    assert code == 0 and out.split() == ["3"], err  # reader: still the default role
    await _until(lambda: held() == "reader\t1", 30)
    # A role granted by hand that the admin cannot revoke: the session is refused in one
    # line, and the account stays locked (it is unlocked last).
    rig.server.sql("CREATE ROLE secret; GRANT secret TO dora@'%'")
    code, _, err = await _mariadb(port, "dora", "SELECT 1", "app")
    assert code != 0 and 'cannot provision db user "dora"' in err, err
    assert len(err.strip().splitlines()) == 1 and "malformed" not in err
    # The same through the proxy's MySQL port (the client's SSLRequest shifts the sequence).
    proc = await asyncio.create_subprocess_exec(
        require_binary("mariadb"), "--no-defaults", "-h127.0.0.1", f"-P{rig.mysql_port}",
        "-udora", f"--ssl-cert={files.crt}", f"--ssl-key={files.key}", f"--ssl-ca={files.ca}",
        "-e", "select 1", "app",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err_b = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0 and 'cannot provision db user "dora"' in err_b.decode()
    assert len(err_b.decode().strip().splitlines()) == 1
    assert held() == "reader,secret\t1"


async def test_bsh_proxy_db_says_in_one_line_that_the_proxy_is_unreachable(world: World) -> None:
    files = await world.rig.login("alice_db", "alice-unreachable")
    ctx = pem_context(
        files.ca.read_text(), files.crt.read_text(), alpn=[ALPN_MYSQL], key_file=files.key
    )
    server = await local_mysql_listener(f"127.0.0.1:{free_port()}", ctx)  # nobody listens
    world.servers.append(server)
    code, _, err = await _mariadb(int(server.sockets[0].getsockname()[1]), "alice_db", "SELECT 1")
    assert code != 0 and "bsh proxy db:" in err and "malformed" not in err, err
    assert len(err.strip().splitlines()) == 1


async def test_lock_cuts_a_live_session(world: World) -> None:
    """Two live sessions, one of a compressing client: the lock's ERR reaches both."""
    rig, port = world.rig, world.alice_port
    procs = [
        await asyncio.create_subprocess_exec(
            require_binary("mariadb"),
            "--no-defaults",
            "-h127.0.0.1",
            f"-P{port}",
            "-ualice_db",
            "--skip-ssl",
            "-e",
            f"select sleep({n})",
            "app",
            *more,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        for n, more in ((30, ()), (31, ("--compress",)))
    ]

    def running() -> set[str]:
        return {q["query"] for q in _queries(rig)[-2:]}

    await _until(lambda: running() == {"select sleep(30)", "select sleep(31)"}, 10)
    lock = Lock(
        metadata=Metadata(name="l1"),
        spec=LockSpec(target=LockTarget(user="alice"), message="laptop stolen"),
    )
    rig.locks.put(lock)
    await rig.locks.enforce([lock])
    for proc in procs:
        _, err = await asyncio.wait_for(proc.communicate(), 5)  # within a second in practice
        assert proc.returncode != 0 and "laptop stolen" in err.decode()
    code, _, err_s = await _mariadb(port, "alice_db", "select 1", "app")
    assert code != 0 and "laptop stolen" in err_s
