"""Automatic database user provisioning by the database agent (role option ``create_db_user``).

Layer: ``agent`` (IO shell). The proxy decided (:mod:`bastion.rbac.db_provision`) that the
connection's db user is the Bastion user name and which database roles it gets; it says so in
the stream header (``"provision": [roles...]``). Before connecting as that user, the agent
connects as the database's ``admin_user`` (configured per database; authenticated like every
other db user, by a db-CA client certificate) and:

* PostgreSQL: ``CREATE ROLE "u" LOGIN`` + ``COMMENT ON ROLE`` (the Bastion marker) on the first
  connection ever, ``ALTER ROLE "u" LOGIN`` afterwards, then ``GRANT "r" TO "u"`` per role and
  ``REVOKE "x" FROM "u"`` for each role it holds that the Bastion roles no longer list (its
  memberships are exactly ``db_roles``); a role that exists without the marker was not made by
  Bastion and is refused (never taken over).
* MariaDB: ``CREATE USER IF NOT EXISTS `u`@'%' REQUIRE SUBJECT '/CN=u/O=cluster' ACCOUNT
  LOCK``, ``REVOKE `x` FROM ...`` for each role it holds (``mysql.roles_mapping``) that the
  Bastion roles no longer list, ``GRANT `r` TO ...``, ``SET DEFAULT ROLE`` (the first role:
  MariaDB has one default role; ``NONE`` without roles) and, last, ``ALTER USER ... ACCOUNT
  UNLOCK`` (a failure before leaves it locked).

When the user's last session on that database ends (a lock ends them all, so a lock disables
too), the user is disabled, never dropped (ownership stays): PostgreSQL ``ALTER ROLE ...
NOLOGIN`` and its remaining backends terminated; MariaDB ``ALTER USER ... ACCOUNT LOCK``. Both
directions are audited (``db.user.create``, ``db.user.disable``). Identifiers are validated by
the proxy and always quoted here; no SQL is built from unquoted input.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from bastion.audit.emitter import Emitter
from bastion.errors import BastionError, ConnectionProblem, RemoteProtocolError
from bastion.protocols import mysql
from bastion.protocols.postgres import (
    MessageReader,
    build_message,
    build_startup,
    parse_error_response,
)
from bastion.rbac.db_provision import check_db_identifier
from bastion.types.database import Database

__all__ = [
    "MARKER",
    "MYSQL_USER_ROLES_SQL",
    "DbAdmin",
    "Provisioner",
    "mysql_disable_sql",
    "mysql_enable_sql",
    "mysql_ident",
    "PG_USER_ROLES_SQL",
    "pg_disable_sql",
    "pg_enable_sql",
    "pg_ident",
    "sql_literal",
    "x509_subject",
]

log = logging.getLogger(__name__)

MARKER = "bastion: auto-provisioned database user"
"""PostgreSQL role comment of the users Bastion created (only those are enabled/disabled)."""


@dataclass(frozen=True, slots=True)
class DbAdmin:
    user: str
    """The database account the agent provisions with (``db_service.databases[].admin_user``)."""
    database: str = ""
    """PostgreSQL database the admin connection opens (default ``postgres``)."""


# ---- SQL (pure) ------------------------------------------------------------------------------


def pg_ident(name: str) -> str:
    """A PostgreSQL quoted identifier (``"a""b"``)."""
    if "\x00" in name:
        raise ValueError("NUL in an identifier")
    return '"' + name.replace('"', '""') + '"'


def mysql_ident(name: str) -> str:
    """A MySQL/MariaDB quoted identifier (```a``b```)."""
    if "\x00" in name:
        raise ValueError("NUL in an identifier")
    return "`" + name.replace("`", "``") + "`"


def sql_literal(value: str) -> str:
    """A standard SQL string literal (quotes doubled; backslashes refused, so the literal means
    the same with or without backslash escapes)."""
    if "\x00" in value or "\\" in value:
        raise ValueError("NUL or backslash in a literal")
    return "'" + value.replace("'", "''") + "'"


def pg_enable_sql(
    user: str, grants: Sequence[str], *, create: bool, revoke: Sequence[str] = ()
) -> str:
    """One simple-protocol query (one implicit transaction) that creates or re-enables
    ``user``, revokes ``revoke``, grants ``grants`` and then checks that the user is a member
    of no other role: a membership the admin could not take back (PostgreSQL 16 keeps one
    granted by another role, with a warning) fails the whole transaction, so the user is
    never enabled with more than ``db_roles``."""
    u = pg_ident(user)
    parts = (
        [f"CREATE ROLE {u} LOGIN", f"COMMENT ON ROLE {u} IS {sql_literal(MARKER)}"]
        if create
        else [f"ALTER ROLE {u} LOGIN"]
    )
    parts += [f"REVOKE {pg_ident(r)} FROM {u}" for r in revoke]
    parts += [f"GRANT {pg_ident(g)} TO {u}" for g in grants]
    if not create:
        if any("$" in name for name in (user, *grants)):
            raise ValueError("$ in a role name")  # it would end the DO block's $$ body
        listed = ", ".join(sql_literal(g) for g in grants)
        parts.append(  # quoted literals, no $ in them: the body stays one dollar-quoted string
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles u ON u.oid "  # noqa: S608
            "= m.member JOIN pg_roles r ON r.oid = m.roleid WHERE u.rolname = "
            f"{sql_literal(user)} AND r.rolname <> ALL (ARRAY[{listed}]::text[])) THEN "
            f"RAISE EXCEPTION {_LEFTOVER_ROLE}; END IF; END $$"
        )
    return "; ".join(parts)


_LEFTOVER_ROLE = sql_literal(
    "it holds a role that db_roles does not list and the admin cannot revoke (granted by "
    "another role): revoke it by hand"
)


PG_USER_ROLES_SQL = (
    "SELECT shobj_description(u.oid, 'pg_authid'), r.rolname FROM pg_roles u "
    "LEFT JOIN pg_auth_members m ON m.member = u.oid LEFT JOIN pg_roles r ON r.oid = m.roleid "
    "WHERE u.rolname = {user} ORDER BY r.rolname"
)
"""A role's marker comment and the roles it is a member of (one row per membership; one row
with NULL when it has none; no row when it does not exist)."""


def pg_disable_sql(user: str) -> str:
    return (  # quoted identifier and literal
        f"ALTER ROLE {pg_ident(user)} NOLOGIN; SELECT pg_terminate_backend(pid) FROM "  # noqa: S608
        f"pg_stat_activity WHERE usename = {sql_literal(user)} AND pid <> pg_backend_pid()"
    )


def mysql_enable_sql(
    user: str, subject: str, grants: Sequence[str], revoke: Sequence[str] = ()
) -> list[str]:
    """Statements (one COM_QUERY each); the first warns (no error) when the user exists. The
    account is unlocked last (a new one is created locked): DCL is not transactional in
    MariaDB, so a statement that fails before (a role the admin cannot revoke or grant)
    leaves the account locked, never able to log in with other roles than ``db_roles``."""
    u = f"{mysql_ident(user)}@'%'"
    out = [f"CREATE USER IF NOT EXISTS {u} REQUIRE SUBJECT {sql_literal(subject)} ACCOUNT LOCK"]
    out += [f"REVOKE {mysql_ident(r)} FROM {u}" for r in revoke]
    out += [f"GRANT {mysql_ident(g)} TO {u}" for g in grants]
    if grants:
        out.append(f"SET DEFAULT ROLE {mysql_ident(grants[0])} FOR {u}")
    elif revoke:
        out.append(f"SET DEFAULT ROLE NONE FOR {u}")
    out.append(f"ALTER USER {u} REQUIRE SUBJECT {sql_literal(subject)} ACCOUNT UNLOCK")
    return out


MYSQL_USER_ROLES_SQL = (
    "SELECT Role FROM mysql.roles_mapping WHERE User = {user} AND Host = '%' ORDER BY Role"
)
"""MariaDB: the roles granted to a user (the admin needs ``SELECT`` on ``mysql.roles_mapping``)."""


def mysql_disable_sql(user: str) -> str:
    return f"ALTER USER {mysql_ident(user)}@'%' ACCOUNT LOCK"


_SHORT = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
}


def x509_subject(cert_pem: str) -> str:
    """The certificate's subject as MariaDB's ``REQUIRE SUBJECT`` compares it (``/CN=u/O=c``)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    parts: list[str] = []
    for rdn in cert.subject.rdns:
        for attr in rdn:
            short = _SHORT.get(attr.oid, attr.oid.dotted_string)
            parts.append(f"/{short}={attr.value!s}")
    return "".join(parts)


# ---- admin connections -----------------------------------------------------------------------


class _SqlError(ConnectionProblem):
    pass


class _PgMessages(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = MessageReader()
        self._queue: asyncio.Queue[tuple[bytes, bytes] | BaseException] = asyncio.Queue()

    def data_received(self, data: bytes) -> None:
        try:
            for msg in self._reader.feed(data):
                self._queue.put_nowait((msg.type, msg.body))
        except RemoteProtocolError as exc:
            self._queue.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._queue.put_nowait(ConnectionProblem("the database closed the admin connection"))

    async def next(self) -> tuple[bytes, bytes]:
        got = await self._queue.get()
        if isinstance(got, BaseException):
            raise got
        return got


async def _pg_until_ready(conn: _PgMessages) -> tuple[list[list[str | None]], dict[str, str]]:
    """Rows (DataRow, text) and the first error, up to ReadyForQuery."""
    rows: list[list[str | None]] = []
    error: dict[str, str] = {}
    while True:
        kind, body = await conn.next()
        if kind == b"Z":
            return rows, error
        if kind == b"E" and not error:
            error = parse_error_response(body)
        elif kind == b"R" and body[:4] != b"\x00\x00\x00\x00":
            raise ConnectionProblem(
                "the admin user must log in by certificate (pg_hba.conf hostssl ... cert)"
            )
        elif kind == b"D":
            count = int.from_bytes(body[:2], "big")
            pos, row = 2, []
            for _ in range(count):
                n = int.from_bytes(body[pos : pos + 4], "big", signed=True)
                pos += 4
                row.append(None if n < 0 else body[pos : pos + n].decode())
                pos += max(n, 0)
            rows.append(row)


ConnectPg = Callable[[Database, str], Awaitable[asyncio.Transport]]
ConnectMySQL = Callable[
    [Database, dict[str, str], dict[str, str]], Awaitable[tuple[asyncio.Transport, bytes]]
]
SubjectOf = Callable[[str], Awaitable[str]]


@dataclass(slots=True)
class Provisioner:
    """Creates/enables db users on first use and disables them after their last session."""

    admins: Mapping[str, DbAdmin]
    connect_pg: ConnectPg
    connect_mysql: ConnectMySQL
    subject_of: SubjectOf
    audit: Emitter | None = None
    _active: dict[tuple[str, str], int] = field(default_factory=dict)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    async def acquire(
        self, db: Database, user: str, grants: Sequence[str], fields: Mapping[str, str]
    ) -> None:
        """Before a session as ``user``: make sure it exists, can log in and has ``grants``.

        Raises:
            ConnectionProblem: no admin configured, the user exists but was not made by
                Bastion, or the database refused (the message names it).
        """
        key = (db.metadata.name, user)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if self._active.get(key, 0) == 0:
                try:
                    created, revoked = await self._enable(db, user, grants)
                except (BastionError, OSError, TimeoutError, ValueError) as exc:
                    why = exc.message if isinstance(exc, BastionError) else str(exc)
                    await self._audit("db.user.create", "failure", db, user, grants, why, fields)
                    raise ConnectionProblem(f'cannot provision db user "{user}": {why}') from None
                extra = {**fields, "db_roles_revoked": list(revoked)} if revoked else fields
                await self._audit(
                    "db.user.create", "success", db, user, grants,
                    "created" if created else "enabled", extra,
                )  # fmt: skip
            self._active[key] = self._active.get(key, 0) + 1

    async def release(self, db: Database, user: str, fields: Mapping[str, str]) -> None:
        """After a session as ``user``: disable it when it was the last one."""
        key = (db.metadata.name, user)
        async with self._locks.setdefault(key, asyncio.Lock()):
            left = self._active.get(key, 1) - 1
            if left > 0:
                self._active[key] = left
                return
            self._active.pop(key, None)
            try:
                await self._disable(db, user)
            except (BastionError, OSError, TimeoutError, ValueError) as exc:
                why = exc.message if isinstance(exc, BastionError) else str(exc)
                log.error("db agent: cannot disable db user %s on %s: %s", user, key[0], why)
                await self._audit("db.user.disable", "failure", db, user, (), why, fields)
                return
            await self._audit("db.user.disable", "success", db, user, (), "last session", fields)

    def active(self, db: str, user: str) -> int:
        return self._active.get((db, user), 0)

    async def _audit(
        self,
        event: str,
        outcome: str,
        db: Database,
        user: str,
        grants: Sequence[str],
        reason: str,
        fields: Mapping[str, object],
    ) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.emit(
                event, outcome=outcome, db_service=db.metadata.name, db_user=user,
                db_roles=list(grants), reason=reason, **fields,
            )  # fmt: skip
        except (BastionError, OSError) as exc:
            log.error("db agent: %s for %s not audited: %s", event, user, exc)

    def _admin(self, db: Database) -> DbAdmin:
        admin = self.admins.get(db.metadata.name)
        if admin is None or not admin.user:
            raise ConnectionProblem(
                f'database "{db.metadata.name}" has no admin_user in db_service (needed by '
                "create_db_user)"
            )
        return admin

    async def _enable(
        self, db: Database, user: str, grants: Sequence[str]
    ) -> tuple[bool, list[str]]:
        """Create or enable ``user`` with exactly ``grants``; returns whether it was created
        and the roles revoked from it."""
        check_db_identifier(user)
        for g in grants:
            check_db_identifier(g, "database role")
        if db.spec.protocol == "mysql":
            return await self._mysql_enable(db, user, grants)
        rows = await self._pg(db, PG_USER_ROLES_SQL.format(user=sql_literal(user)))
        if rows and rows[0][0] != MARKER:
            raise ConnectionProblem(
                f'db user "{user}" exists and was not created by Bastion; drop create_db_user '
                "or rename that user"
            )
        held = {row[1] for row in rows if row[1] is not None}
        revoke = sorted(held - set(grants))
        await self._pg(db, pg_enable_sql(user, grants, create=not rows, revoke=revoke))
        return not rows, revoke

    async def _disable(self, db: Database, user: str) -> None:
        if db.spec.protocol == "mysql":
            await self._mysql(db, [mysql_disable_sql(user)])
        else:
            await self._pg(db, pg_disable_sql(user))

    async def _pg(self, db: Database, sql: str) -> list[list[str | None]]:
        admin = self._admin(db)
        transport = await self.connect_pg(db, admin.user)
        conn = _PgMessages()
        transport.set_protocol(conn)
        try:
            params = {"user": admin.user, "database": admin.database or "postgres"}
            params["application_name"] = "bastion-db-agent"
            transport.write(build_startup(params))
            _, error = await _pg_until_ready(conn)
            if error:
                raise _SqlError(f"admin login: {error.get('M', 'refused')}")
            transport.write(build_message(b"Q", sql.encode() + b"\x00"))
            rows, error = await _pg_until_ready(conn)
            if error:
                raise _SqlError(error.get("M", "error"))
            transport.write(build_message(b"X"))
            return rows
        finally:
            transport.close()

    async def _mysql_enable(
        self, db: Database, user: str, grants: Sequence[str]
    ) -> tuple[bool, list[str]]:
        subject = await self.subject_of(user)
        (held,) = await self._mysql(db, [MYSQL_USER_ROLES_SQL.format(user=sql_literal(user))])
        revoke = sorted({row[0] for row in held.rows if row[0]} - set(grants))
        (first, *_) = await self._mysql(db, mysql_enable_sql(user, subject, grants, revoke))
        return first.warnings == 0, revoke

    async def _mysql(self, db: Database, statements: Sequence[str]) -> list[_Answer]:
        """Run statements as the admin; returns each one's answer (warnings of an OK packet,
        or the rows of a text result set)."""
        admin = self._admin(db)
        caps = mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION | mysql.CLIENT_TRANSACTIONS
        params = {"user": admin.user, "capabilities": str(caps), "database": admin.database}
        transport, _ = await self.connect_mysql(db, params, {"program_name": "bastion-db-agent"})
        packets = transport.get_protocol()
        next_packet = getattr(packets, "next", None)
        if next_packet is None:
            transport.close()
            raise ConnectionProblem("unexpected admin connection")
        answers: list[_Answer] = []
        try:
            for sql in statements:
                transport.write(mysql.build_packet(0, bytes([mysql.COM_QUERY]) + sql.encode()))
                answers.append(await _mysql_answer(next_packet))
            transport.write(mysql.build_packet(0, bytes([mysql.COM_QUIT])))
            return answers
        finally:
            transport.close()


@dataclass(frozen=True, slots=True)
class _Answer:
    warnings: int = 0
    rows: list[list[str | None]] = field(default_factory=list)


async def _mysql_answer(next_packet: Callable[[], Awaitable[mysql.Packet]]) -> _Answer:
    """A COM_QUERY's answer: OK, ERR (raised) or a text result set (its rows)."""
    first = (await next_packet()).payload
    if first[:1] == b"\xff":
        _, _, message = mysql.parse_err(first)
        raise _SqlError(message)
    if first[:1] == b"\x00":
        return _Answer(warnings=_ok_warnings(first))
    columns = mysql.parse_column_count(first)
    for _ in range(columns):  # column definitions
        await next_packet()
    if not mysql.is_eof((await next_packet()).payload):
        raise RemoteProtocolError("result set: no EOF after the column definitions")
    rows: list[list[str | None]] = []
    while not mysql.is_eof(payload := (await next_packet()).payload):
        if payload[:1] == b"\xff":
            raise _SqlError(mysql.parse_err(payload)[2])
        rows.append(mysql.parse_text_row(payload, columns))
    return _Answer(rows=rows)


def _ok_warnings(payload: bytes) -> int:
    """The warning count of an OK packet (0 when it cannot be read)."""
    pos = 1
    for _ in range(2):  # affected rows, last insert id (length-encoded integers)
        if pos >= len(payload):
            return 0
        first = payload[pos]
        pos += {0xFC: 3, 0xFD: 4, 0xFE: 9}.get(first, 1)
    if pos + 4 > len(payload):
        return 0
    return int.from_bytes(payload[pos + 2 : pos + 4], "little")
