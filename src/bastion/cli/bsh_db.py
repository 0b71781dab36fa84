"""``bsh db ls|login|connect|env|logout`` and ``bsh proxy db``: PostgreSQL clients through the
proxy, no passwords.

Layer: client edge. ``bsh db ls [k=v ...]`` lists the databases your roles select (RBAC on the
server, ``GET /v1/db``). ``bsh db login NAME --db-user U --db-name D`` asks auth for a certificate
routed to that database (``POST /v1/db/certs``), keeps it with a fresh key under the profile
(``db/NAME.crt``, ``db/NAME.key``, ``db/NAME.ca``: the CA that verifies the proxy) and writes a
``[bastion-NAME]`` entry in the profile's ``pg_service.conf``, so::

    PGSERVICEFILE=~/.bsh/<profile>/pg_service.conf psql "service=bastion-NAME"

connects straight to the proxy port (psql's SSLRequest, then TLS with that certificate).
``bsh db connect NAME`` runs ``psql`` with that service entry (logging in first when there is no
certificate or the db user or name differ); ``bsh db env NAME`` prints the ``PGSERVICEFILE`` and
``PGSERVICE`` exports; ``bsh db logout [NAME]`` removes the certificates and entries.
``bsh proxy db NAME --port P`` listens on 127.0.0.1:P for clients that cannot present a
certificate (GUI tools, ``sslmode=disable``) and carries each connection to the proxy in TLS
with ALPN ``bastion-postgres/1`` and the database certificate.

MySQL/MariaDB databases (``protocol: mysql``): the server speaks first, so clients always go
through a local listener. ``bsh db login`` writes ``db/NAME.my.cnf`` (a MySQL option file:
``host``, ``port`` 13306, ``user``, ``database``, ``skip-ssl`` for the loopback hop) instead of
a pg_service.conf entry; ``bsh proxy db NAME --port 13306`` greets MySQL clients itself (a
HandshakeV10 offering :data:`~bastion.protocols.mysql.LOCAL_CAPABILITIES`), reads the client's
HandshakeResponse41 and carries it to the proxy in TLS with ALPN ``bastion-mysql/1``; the
database agent does the real handshake and the server's OK comes back as the answer.
``bsh db connect NAME`` starts such a listener on a free port and runs ``mariadb`` (or
``mysql``) with ``--defaults-extra-file=db/NAME.my.cnf``.

A ``bsh login --key-store=tpm`` profile: the database certificate is for the TPM-held key (no
``db/NAME.key``; the TPM signs each handshake, :mod:`bastion.client.device.tpm_tls`). psql
cannot present such a key, so the pg_service.conf entry names ``bsh proxy db NAME --port
15432``'s local listener (:func:`local_service_entry`), and ``bsh db connect`` runs psql on a
listener of its own.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import click
from cryptography import x509

from bastion.cli.common import handle_errors
from bastion.cli.identity import run_async
from bastion.cli.profile_api import check_label_filters, current_profile, profile_send
from bastion.cli.render import print_json, print_table
from bastion.client.mfa import origin_for, solve
from bastion.client.profile import Profile, resource_key
from bastion.client.proxy_conn import split_host_port
from bastion.client.tls import profile_key_is_tpm, resource_context
from bastion.contract.db import (
    DB_LIST,
    DB_SESSION_CERT,
    DB_SESSION_CHALLENGE,
    DB_USER_CERT,
    DbCert,
    DbInfo,
    DbListQuery,
    DbSessionIssue,
    DbSessionTarget,
    DbUserCertRequest,
)
from bastion.errors import BadParameter, BastionError, NotFound, RemoteProtocolError
from bastion.files import write_private_file
from bastion.protocols import mysql
from bastion.protocols.alpn import ALPN_MYSQL, ALPN_POSTGRES
from bastion.protocols.postgres import (
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    error_response,
    parse_startup_packet,
)
from bastion.proxy.relay import Relay
from bastion.runtime import as_transport, tune_runtime
from bastion.runtime import run as run_loop
from bastion.tasks import spawn

__all__ = [
    "REFRESH_MARGIN",
    "ContextSource",
    "ListenerCerts",
    "cert_expiry",
    "db_context",
    "db_group",
    "db_rows",
    "local_mysql_listener",
    "mysql_option_file",
    "needs_fresh_cert",
    "remove_service_entry",
    "proxy_db",
    "run_proxy_db",
    "service_entry",
    "update_service_file",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


def service_entry(name: str, host: str, port: int, db_user: str, db_name: str, files: Path) -> str:
    """The ``pg_service.conf`` section for database ``name`` (psql ``service=bastion-NAME``)."""
    lines = [
        f"[bastion-{name}]",
        f"host={host}",
        f"port={port}",
        *([f"user={db_user}"] if db_user else []),
        *([f"dbname={db_name}"] if db_name else []),
        "sslmode=verify-full",
        f"sslrootcert={files}.ca",
        f"sslcert={files}.crt",
        f"sslkey={files}.key",
    ]
    return "\n".join(lines) + "\n"


MYSQL_PORT = 13306
"""The local port a MySQL option file names (``bsh proxy db NAME --port 13306``)."""
PG_PORT = 15432
"""The local port the pg_service.conf entry of a TPM-held key names (``bsh proxy db NAME
--port 15432``)."""


def local_service_entry(name: str, port: int, db_user: str, db_name: str) -> str:
    """The ``pg_service.conf`` section for database ``name`` when its certificate is for a
    TPM-held key (``bsh login --key-store=tpm``): psql cannot present that key, so the entry
    names ``bsh proxy db``'s local listener, which presents it (the TPM signs)."""
    lines = [
        f"[bastion-{name}]",
        f"# a TPM-held key: run bsh proxy db {name} --port {port} first",
        "host=127.0.0.1",
        f"port={port}",
        *([f"user={db_user}"] if db_user else []),
        *([f"dbname={db_name}"] if db_name else []),
        "sslmode=disable",
    ]
    return "\n".join(lines) + "\n"


def mysql_option_file(name: str, db_user: str, db_name: str, port: int = MYSQL_PORT) -> str:
    """The MySQL option file of database ``name`` (``mariadb --defaults-extra-file=...``)."""
    lines = [
        f"# bsh db login {name}: run bsh proxy db {name} --port {port} first",
        "[client]",
        "host=127.0.0.1",
        f"port={port}",
        *([f"user={db_user}"] if db_user else []),
        *([f"database={db_name}"] if db_name else []),
        "skip-ssl",
    ]
    return "\n".join(lines) + "\n"


def _option_file(files: Path) -> Path:
    return Path(f"{files}.my.cnf")


def _mysql_entry(files: Path) -> dict[str, str]:
    """The settings of a MySQL option file ({} when there is none)."""
    path = _option_file(files)
    found: dict[str, str] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def update_service_file(text: str, name: str, entry: str) -> str:
    """``text`` with the ``[bastion-NAME]`` section replaced by (or added as) ``entry``."""
    body = remove_service_entry(text, name)
    return body + entry


def remove_service_entry(text: str, name: str) -> str:
    """``text`` without the ``[bastion-NAME]`` section (ends with a newline when not empty)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.strip() == f"[bastion-{name}]"
        if not skipping:
            out.append(line)
    body = "".join(out)
    if body and not body.endswith("\n"):
        body += "\n"
    return body


def _files(profile: Profile, name: str) -> Path:
    if not _NAME.match(name):
        raise BadParameter(f"invalid database name {name!r}")
    return profile.path / "db" / name


@click.group("db")
def db_group() -> None:
    """Databases through the proxy: certificates for psql, a local listener.

    \b
    Examples:
      bsh db ls env=prod
      bsh db login orders --db-user reader --db-name orders
      PGSERVICEFILE=~/.bsh/<profile>/pg_service.conf psql "service=bastion-orders"
      bsh db connect orders
      eval "$(bsh db env orders)"; psql
      bsh proxy db orders --port 15432
      bsh db logout
    """


DB_COLUMNS = ("NAME", "PROTOCOL", "STATUS", "DB USERS", "DB NAMES", "LABELS")


def db_rows(items: list[DbInfo]) -> list[list[str]]:
    return [
        [
            d.name,
            d.protocol,
            "online" if d.online else "static",
            ",".join(d.db_users),
            ",".join(d.db_names),
            ",".join(f"{k}={v}" for k, v in sorted(d.labels.items())),
        ]
        for d in items
    ]


@db_group.command("ls")
@click.argument("labels", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def ls_command(labels: tuple[str, ...], fmt: str) -> None:
    """List the databases your roles allow, filtered by labels (k=v).

    \b
    Examples:
      bsh db ls
      bsh db ls env=prod --format json
    """
    check_label_filters(labels)
    query = DbListQuery(labels=",".join(labels))
    items = profile_send(current_profile(), DB_LIST, query=query).items
    if fmt == "json":
        print_json([i.model_dump() for i in items])
        return
    print_table(DB_COLUMNS, db_rows(items), empty="No databases found.")


@db_group.command("login")
@click.argument("name")
@click.option("--db-user", default="", help="Database user (default: decided at connect time).")
@click.option("--db-name", default="", help="Database name (default: decided at connect time).")
@click.option("--ttl", default="12h", show_default=True, help="Capped by your login.")
@handle_errors
def login_command(name: str, db_user: str, db_name: str, ttl: str) -> None:
    """Get a certificate for database NAME and a pg_service.conf entry.

    \b
    Examples:
      bsh db login orders --db-user reader --db-name orders
      bsh db login orders --ttl 1h
    """
    service, expires = _login(name, db_user, db_name, ttl)
    if service.suffix == ".cnf":
        click.echo(
            f"database {name} (MySQL): certificate valid until {expires}\n"
            f"  bsh proxy db {name} --port {MYSQL_PORT}, then: "
            f"mariadb --defaults-extra-file={service}\n"
            f"  or: bsh db connect {name}"
        )
        return
    if profile_key_is_tpm(current_profile().path):
        click.echo(
            f"database {name}: certificate valid until {expires}, for your TPM-held key\n"
            f"  psql cannot use a TPM-held key: run bsh proxy db {name} --port {PG_PORT}, then "
            f'PGSERVICEFILE={service} psql "service=bastion-{name}"\n'
            f"  or: bsh db connect {name}"
        )
        return
    click.echo(
        f"database {name}: certificate valid until {expires}\n"
        f'  PGSERVICEFILE={service} psql "service=bastion-{name}"\n'
        f"  or: bsh db connect {name}\n"
        f"  or: bsh proxy db {name} --port 15432, then psql -h 127.0.0.1 -p 15432"
    )


def _login(name: str, db_user: str, db_name: str, ttl: str) -> tuple[Path, str]:
    """``bsh db login``: returns the service file and the certificate's expiry."""
    profile = current_profile()
    files = _files(profile, name)
    tpm = profile_key_is_tpm(profile.path)  # --key-store=tpm: for the TPM-held key, no key file
    key_pem, pub = resource_key(profile.path)
    body = DbUserCertRequest.model_validate(
        {
            "db_service": name,
            "db_user": db_user,
            "db_name": db_name,
            "public_key": pub.decode(),
            "ttl": ttl,
        }
    )

    reply = _session_cert(profile, name, db_user, db_name, pub.decode())
    if reply is None:
        reply = profile_send(profile, DB_USER_CERT, body)
    cert, ca, expires = reply.cert, reply.ca, reply.expires
    if key_pem:
        write_private_file(Path(f"{files}.key"), key_pem)
    else:
        Path(f"{files}.key").unlink(missing_ok=True)
    write_private_file(Path(f"{files}.crt"), cert)
    write_private_file(Path(f"{files}.ca"), ca)
    if _protocol(profile, name) == "mysql":
        options = _option_file(files)
        write_private_file(options, mysql_option_file(name, db_user, db_name))
        return options, expires
    _option_file(files).unlink(missing_ok=True)
    host, port = split_host_port(profile.proxy)
    service = profile.path / "pg_service.conf"
    old = service.read_text() if service.is_file() else ""
    entry = (
        local_service_entry(name, PG_PORT, db_user, db_name)
        if tpm
        else service_entry(name, host, port, db_user, db_name, files)
    )
    write_private_file(service, update_service_file(old, name, entry))
    return service, expires


def _session_cert(
    profile: Profile, name: str, db_user: str, db_name: str, public_key: str
) -> DbCert | None:
    """A 1-minute per-session MFA certificate when the roles require MFA for this database and
    db user (the security key is asked for); None otherwise, or when the server cannot tell
    (then the ordinary certificate is issued and the proxy decides at connect time)."""
    if not db_user:
        return None
    target = DbSessionTarget(db_service=name, db_user=db_user, db_name=db_name)
    try:
        answer = profile_send(profile, DB_SESSION_CHALLENGE, target)
    except BastionError:
        return None
    if not answer.mfa_required:
        return None
    if answer.challenge is None:
        raise RemoteProtocolError("the server asked for MFA but sent no challenge")
    click.echo(f"per-session MFA for database {name}: touch your security key", err=True)
    response = solve(answer.challenge, origin_for(profile.proxy), profile_dir=profile.path)
    issue = DbSessionIssue(
        db_service=name, db_user=db_user, db_name=db_name, public_key=public_key,
        mfa_response=response,
    )  # fmt: skip
    return profile_send(profile, DB_SESSION_CERT, issue)


def _info(profile: Profile, name: str) -> DbInfo | None:
    """Database ``name`` as the cluster lists it (None: not listed)."""
    items = profile_send(profile, DB_LIST, query=DbListQuery()).items
    return next((item for item in items if item.name == name), None)


def _protocol(profile: Profile, name: str) -> str:
    """The protocol of database ``name`` as the cluster lists it (default ``postgres``)."""
    info = _info(profile, name)
    return "postgres" if info is None else info.protocol


def _listed_version(profile: Profile, name: str) -> str | None:
    """The version database ``name``'s MySQL/MariaDB server greets with, as the cluster lists
    it (``""``: not seen yet; None: the cluster unreachable)."""
    try:
        info = _info(profile, name)
    except (BastionError, OSError):
        return None
    return "" if info is None else info.mysql_server_version


def _server_version(profile: Profile, name: str) -> str:
    """:func:`_listed_version`, ``""`` when unknown (the local greeting is then a generic one,
    without MariaDB's bulk execution)."""
    return _listed_version(profile, name) or ""


@dataclass
class ServerVersion:
    """What ``bsh proxy db``'s MySQL greeting says the database's server is (``bsh db ls``'s
    ``mysql_server_version``; ``""``: a generic greeting), read at each connection."""

    value: str = ""


VERSION_REFRESH = 60.0
"""How often a running ``bsh proxy db`` asks the cluster again: the agent reports the version
after the database's first session, and a database can move to another server."""


async def follow_server_version(
    version: ServerVersion,
    fetch: Callable[[], Awaitable[str | None]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Keep ``version`` as the cluster lists it, every :data:`VERSION_REFRESH` seconds (None
    from ``fetch``: the cluster unreachable, the last known one stays)."""
    while True:
        await sleep(VERSION_REFRESH)
        got = await fetch()
        if got is not None:
            version.value = got


def _entry(profile: Profile, name: str) -> dict[str, str]:
    """The settings of the ``[bastion-NAME]`` section ({} when there is none)."""
    service = profile.path / "pg_service.conf"
    found: dict[str, str] = {}
    inside = False
    for line in service.read_text().splitlines() if service.is_file() else []:
        if line.startswith("["):
            inside = line.strip() == f"[bastion-{name}]"
        elif inside and "=" in line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def _valid(files: Path) -> bool:
    """A certificate for ``files`` exists and is valid for another minute."""
    try:
        cert = x509.load_pem_x509_certificate(Path(f"{files}.crt").read_bytes())
    except (OSError, ValueError):
        return False
    return (cert.not_valid_after_utc - datetime.now(UTC)).total_seconds() > 60


@db_group.command("connect", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--db-user", default="", help="Database user (default: the login's).")
@click.option("--db-name", default="", help="Database name (default: the login's).")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def connect_command(name: str, db_user: str, db_name: str, psql_args: tuple[str, ...]) -> None:
    """Run psql on database NAME (logs in to it first when needed); arguments after NAME go to
    psql.

    \b
    Examples:
      bsh db connect orders --db-user reader
      bsh db connect orders -- -Atc "select 1"
    """
    profile = current_profile()
    files = _files(profile, name)
    if _option_file(files).is_file():
        _connect_mysql(profile, name, files, db_user, db_name, psql_args)
        return
    entry = _entry(profile, name)
    stale = not entry or not _valid(files)
    if (db_user and entry.get("user") != db_user) or (db_name and entry.get("dbname") != db_name):
        stale = True
    if stale:
        options, _ = _login(
            name, db_user or entry.get("user", ""), db_name or entry.get("dbname", ""), "12h"
        )
        if options.suffix == ".cnf":  # a MySQL database after all
            _connect_mysql(profile, name, files, db_user, db_name, psql_args)
            return
    psql = shutil.which("psql")
    if psql is None:
        raise NotFound(
            "psql not found: install the PostgreSQL client (apt install postgresql-client)"
        )
    env = {**os.environ, "PGSERVICEFILE": str(profile.path / "pg_service.conf")}
    env.pop("PGSERVICE", None)
    sys.stdout.flush()
    if not Path(f"{files}.key").exists() and profile_key_is_tpm(profile.path):
        # psql cannot present a TPM-held key: a local listener on a free port presents it
        sys.exit(run_async(_run_psql_local(profile, name, psql, env, psql_args)))
    os.execvpe(psql, [psql, f"service=bastion-{name}", *psql_args], env)  # noqa: S606


async def _run_psql_local(
    profile: Profile, name: str, psql: str, env: dict[str, str], args: tuple[str, ...]
) -> int:
    """``bsh db connect`` with a TPM-held key: psql on a local listener (as ``bsh proxy db``)."""
    server = await local_postgres_listener(profile.proxy, db_context(profile, name))
    port = server.sockets[0].getsockname()[1]
    async with server:
        proc = await asyncio.create_subprocess_exec(
            psql, f"service=bastion-{name} port={port}", *args, env=env
        )
        return await proc.wait()


def _connect_mysql(
    profile: Profile,
    name: str,
    files: Path,
    db_user: str,
    db_name: str,
    args: tuple[str, ...],
) -> None:
    """``bsh db connect`` for MySQL: a local listener on a free port and ``mariadb`` on it."""
    entry = _mysql_entry(files)
    if (
        not _valid(files)
        or (db_user and entry.get("user") != db_user)
        or (db_name and entry.get("database") != db_name)
    ):
        _login(name, db_user or entry.get("user", ""), db_name or entry.get("database", ""), "12h")
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        raise NotFound("mariadb not found: install the MariaDB client (apt install mariadb-client)")
    ctx = db_context(profile, name)
    version = _server_version(profile, name)
    code = run_async(_run_mysql_client(profile, ctx, client, files, args, version))
    sys.exit(code)


async def _run_mysql_client(
    profile: Profile,
    ctx: ssl.SSLContext,
    client: str,
    files: Path,
    args: tuple[str, ...],
    server_version: str = "",
) -> int:
    server = await local_mysql_listener(profile.proxy, ctx, server_version=server_version)
    port = server.sockets[0].getsockname()[1]
    async with server:
        proc = await asyncio.create_subprocess_exec(
            client,
            f"--defaults-extra-file={_option_file(files)}",
            "--host=127.0.0.1",
            f"--port={port}",
            *args,
        )
        return await proc.wait()


@db_group.command("env")
@click.argument("name")
@handle_errors
def env_command(name: str) -> None:
    """Print shell exports so plain psql (and libpq tools) reach database NAME.

    \b
    Example:
      eval "$(bsh db env orders)"; psql
    """
    profile = current_profile()
    if not _entry(profile, name):
        raise NotFound(f"not logged in to database {name}: run bsh db login {name}")
    service = shlex.quote(str(profile.path / "pg_service.conf"))
    click.echo(f"export PGSERVICEFILE={service}\nexport PGSERVICE={shlex.quote('bastion-' + name)}")
    if _entry(profile, name).get("host") == "127.0.0.1":  # a TPM-held key: local_service_entry
        port = _entry(profile, name).get("port", str(PG_PORT))
        click.echo(f"# a TPM-held key: run bsh proxy db {name} --port {port} first", err=True)


@db_group.command("logout")
@click.argument("name", required=False)
@handle_errors
def logout_command(name: str | None) -> None:
    """Remove the certificate and pg_service.conf entry of database NAME (default: all).

    \b
    Examples:
      bsh db logout orders
      bsh db logout
    """
    profile = current_profile()
    service = profile.path / "pg_service.conf"
    text = service.read_text() if service.is_file() else ""
    names = [name] if name else re.findall(r"^\[bastion-([^\]]+)\]", text, re.MULTILINE)
    if not name and (profile.path / "db").is_dir():
        names += [p.name[: -len(".my.cnf")] for p in (profile.path / "db").glob("*.my.cnf")]
        names = list(dict.fromkeys(names))
    removed = []
    for one in names:
        files = _files(profile, one)
        gone = False
        for suffix in (".crt", ".key", ".ca", ".my.cnf"):
            path = Path(f"{files}{suffix}")
            if path.exists():
                path.unlink()
                gone = True
        if f"[bastion-{one}]" in text:
            text = remove_service_entry(text, one)
            gone = True
        if gone:
            removed.append(one)
    if service.is_file():
        write_private_file(service, text)
    if name and not removed:
        raise NotFound(f"not logged in to database {name}")
    click.echo(f"logged out of {', '.join(removed)}" if removed else "no database logins")


# ---------------------------------------------------------------------------- bsh proxy db

REFRESH_MARGIN = timedelta(seconds=10)
"""``bsh proxy db`` gets a new certificate for a new connection when its certificate expires
within this (a per-session MFA certificate lives one minute)."""


def needs_fresh_cert(
    expires: datetime | None, now: datetime, margin: timedelta = REFRESH_MARGIN
) -> bool:
    """Whether the local listener must get a new database certificate before it carries a new
    client connection: none readable (``expires`` None), or it expires within ``margin``. A
    still-valid certificate is reused (no MFA prompt per connection)."""
    return expires is None or expires - now <= margin


def cert_expiry(files: Path) -> datetime | None:
    """When the certificate ``files``.crt expires (None: missing or unreadable)."""
    try:
        cert = x509.load_pem_x509_certificate(Path(f"{files}.crt").read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc


def _relogin(profile: Profile, name: str) -> None:
    """``bsh db login NAME`` again with the db user and name of the current login (asks for
    the security key on the terminal when the roles require per-session MFA)."""
    files = _files(profile, name)
    if _option_file(files).is_file():
        entry = _mysql_entry(files)
        _login(name, entry.get("user", ""), entry.get("database", ""), "12h")
    else:
        entry = _entry(profile, name)
        _login(name, entry.get("user", ""), entry.get("dbname", ""), "12h")


ContextSource = Callable[[], Awaitable[ssl.SSLContext]]
"""Gives the TLS context (the database certificate) for one new local connection."""


class ListenerCerts:
    """The database certificate of ``bsh proxy db``'s listener, checked for every new client
    connection: reused while valid for another :data:`REFRESH_MARGIN`, else replaced by a fresh
    one (``login``: :func:`_relogin`, run in a thread: it may prompt for MFA) once, whatever
    the number of connections waiting for it. ``load`` reads the current certificate's TLS
    context and expiry (default: the profile's files of database ``name``)."""

    def __init__(
        self,
        profile: Profile,
        name: str,
        *,
        login: Callable[[Profile, str], None] = _relogin,
        load: Callable[[], tuple[ssl.SSLContext, datetime | None]] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._profile = profile
        self._name = name
        self._login = login
        self._read = load or (
            lambda: (db_context(profile, name), cert_expiry(_files(profile, name)))
        )
        self._now = now
        self._ctx: ssl.SSLContext | None = None
        self._expires: datetime | None = None
        self._lock = asyncio.Lock()
        self.renewals = 0

    def _load(self) -> None:
        self._ctx, self._expires = self._read()

    async def context(self) -> ssl.SSLContext:
        if self._ctx is None:
            self._load()
        if self._ctx is not None and not needs_fresh_cert(self._expires, self._now()):
            return self._ctx
        async with self._lock:  # one MFA prompt for the connections arriving meanwhile
            self._load()  # another connection (or a bsh db login) may have renewed it
            if needs_fresh_cert(self._expires, self._now()):
                sys.stderr.write(f"bsh proxy db {self._name}: certificate expiring; renewing\n")
                await asyncio.to_thread(self._login, self._profile, self._name)
                self.renewals += 1
                self._load()
        assert self._ctx is not None
        return self._ctx


def _source(ctx: ssl.SSLContext | ContextSource) -> ContextSource:
    if isinstance(ctx, ssl.SSLContext):
        fixed = ctx

        async def same() -> ssl.SSLContext:
            return fixed

        return same
    return ctx


async def _local_startup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Read the local client's first packets: answer SSLRequest/GSSENCRequest with ``N`` (the
    local hop is loopback); return the StartupMessage bytes to forward."""
    data = b""
    while True:
        got = parse_startup_packet(data)
        if got is None:
            chunk = await reader.read(8192)
            if not chunk:
                raise ConnectionResetError("client closed")
            data += chunk
            continue
        packet, used = got
        if isinstance(packet, SSLRequest | GSSENCRequest):
            writer.write(b"N")
            data = data[used:]
            continue
        if isinstance(packet, CancelRequest):
            raise RemoteProtocolError("query cancellation is not supported through bsh proxy db")
        return data


async def _serve_local(
    proxy: str,
    source: ContextSource,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    try:
        try:
            startup = await asyncio.wait_for(_local_startup(reader, writer), 30)
            relay, up = await _dial_proxy(proxy, source)
        except (OSError, TimeoutError, BastionError) as exc:
            writer.write(error_response(f"bsh proxy db: {exc}", code="08006"))
            await writer.drain()
            return
        up.write(startup)
        await _relay_local(relay, reader, writer)
    finally:
        writer.close()


async def _dial_proxy(proxy: str, source: ContextSource) -> tuple[Relay, asyncio.Transport]:
    """TLS to the proxy (``host:port``) with the context ``source`` gives, as the relay's
    side ``b``."""
    ctx = await source()
    host, port = split_host_port(proxy)
    relay = Relay(name="bsh proxy db")
    up, _ = await asyncio.wait_for(
        asyncio.get_running_loop().create_connection(
            lambda: relay.b, host, port, ssl=ctx, server_hostname=host
        ),
        15,
    )
    return relay, as_transport(up)


async def _relay_local(
    relay: Relay, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Bytes flow protocol to protocol from now on (no stream buffers, no drain per chunk):
    the local client's transport is the relay's side ``a``, with what its reader buffered."""
    transport = as_transport(writer.transport)  # either loop (bsh proxy db: uvloop)
    relay.attach_a(transport, bytes(getattr(reader, "_buffer", b"")))
    relay.start()
    await relay.wait_closed()


async def local_postgres_listener(
    proxy: str,
    ctx: ssl.SSLContext | ContextSource,
    host: str = "127.0.0.1",
    port: int = 0,
) -> asyncio.Server:
    """Listen on ``host:port`` for PostgreSQL clients (plaintext on the local hop: an
    SSLRequest is answered ``N``) and carry each to ``proxy`` (``host:port``) in TLS with
    ``ctx`` (the database certificate, ALPN ``bastion-postgres/1``; or what gives it per
    connection: :meth:`ListenerCerts.context`)."""
    source = _source(ctx)
    return await asyncio.start_server(lambda r, w: _serve_local(proxy, source, r, w), host, port)


_CONNECTIONS = iter(range(1, 1 << 31))


async def _local_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server_version: str = ""
) -> mysql.HandshakeResponse:
    """Greet the local MySQL client as the database's server would (``server_version``: its
    greeting's, when known) and read its HandshakeResponse41, its capabilities narrowed to
    those in effect (what it asked for and the greeting offered: the agent asks the database
    for no more)."""
    scramble = bytes(33 + b % 94 for b in os.urandom(20))  # printable, no NUL
    version, capabilities = mysql.greeting(server_version)
    greeting = mysql.build_handshake(
        connection_id=next(_CONNECTIONS),
        scramble=scramble,
        server_version=version,
        capabilities=capabilities,
    )
    writer.write(mysql.build_packet(0, greeting))
    packets = mysql.PacketReader(mysql.MAX_HANDSHAKE_LENGTH)
    while True:
        chunk = await reader.read(8192)
        if not chunk:
            raise ConnectionResetError("client closed")
        got = packets.feed(chunk)
        if got:
            hello = mysql.parse_handshake_response(got[0].payload)
            if isinstance(hello, mysql.SSLRequest):
                raise RemoteProtocolError("TLS was not offered on the local hop")
            return replace(hello, capabilities=hello.capabilities & capabilities)


async def _serve_local_mysql(
    proxy: str,
    source: ContextSource,
    server_version: ServerVersion,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    try:
        try:
            greeting = _local_handshake(reader, writer, server_version.value)
            hello = await asyncio.wait_for(greeting, 30)
            relay, up = await _dial_proxy(proxy, source)
        except (OSError, TimeoutError, BastionError) as exc:
            why = f"bsh proxy db: {exc}"
            writer.write(mysql.err_packet(2, mysql.ER_NET_READ_ERROR, "08S01", why))
            await writer.drain()
            return
        # The local hop's password (if any) stays here: the database trusts the certificate.
        forwarded = replace(hello, auth_response=b"")
        up.write(mysql.build_packet(1, mysql.build_handshake_response(forwarded)))
        await _relay_local(relay, reader, writer)
    finally:
        writer.close()


async def local_mysql_listener(
    proxy: str,
    ctx: ssl.SSLContext | ContextSource,
    host: str = "127.0.0.1",
    port: int = 0,
    server_version: str | ServerVersion = "",
) -> asyncio.Server:
    """Listen on ``host:port`` for MySQL clients and carry each to ``proxy`` (``host:port``)
    in TLS with ``ctx`` (the database certificate, ALPN ``bastion-mysql/1``; or what gives
    it per connection: :meth:`ListenerCerts.context`). Clients are greeted as the database's
    server (``server_version``, from ``bsh db ls``, read at each connection: MariaDB's gets
    its bulk execution; ``""``: a generic greeting)."""
    source = _source(ctx)
    version = (
        server_version
        if isinstance(server_version, ServerVersion)
        else ServerVersion(server_version)
    )
    return await asyncio.start_server(
        lambda r, w: _serve_local_mysql(proxy, source, version, r, w), host, port
    )


def db_context(profile: Profile, name: str) -> ssl.SSLContext:
    """TLS to the proxy with the database certificate of ``name`` (ALPN ``bastion-mysql/1``
    after a MySQL login, else ``bastion-postgres/1``)."""
    files = _files(profile, name)
    if not Path(f"{files}.crt").is_file():
        raise NotFound(f"no certificate for database {name}: run bsh db login {name}")
    return resource_context(
        profile.path,
        Path(f"{files}.ca").read_text(),
        Path(f"{files}.crt").read_text(),
        Path(f"{files}.key"),
        [ALPN_MYSQL if _option_file(files).is_file() else ALPN_POSTGRES],
    )


async def run_proxy_db(
    profile: Profile,
    ctx: ssl.SSLContext | ContextSource,
    name: str,
    host: str,
    port: int,
) -> None:
    """Serve the local listener until cancelled (``ctx``: the database certificate's context,
    or :meth:`ListenerCerts.context`, which renews an expiring certificate per connection).
    MySQL: clients are greeted as the server ``bsh db ls`` lists, asked again every
    :data:`VERSION_REFRESH` seconds (:func:`local_mysql_listener`)."""
    is_mysql = _option_file(_files(profile, name)).is_file()
    source = _source(ctx)
    follow: asyncio.Task[None] | None = None
    if is_mysql:
        lookup = partial(_listed_version, profile, name)
        listed = await asyncio.to_thread(lookup)
        version = ServerVersion(listed or "")
        server = await local_mysql_listener(profile.proxy, source, host, port, version)
        follow = spawn(
            follow_server_version(version, lambda: asyncio.to_thread(lookup)), "db-version"
        )
    else:
        server = await local_postgres_listener(profile.proxy, source, host, port)
    bound = server.sockets[0].getsockname()[1]
    hint = (
        f"mariadb --defaults-extra-file={_option_file(_files(profile, name))} --port {bound}"
        if is_mysql
        else f"psql -h {host} -p {bound} (sslmode=disable is fine: TLS starts here)"
    )
    sys.stderr.write(f"bsh proxy db {name}: listening on {host}:{bound}; {hint}\n")
    sys.stderr.flush()
    try:
        async with server:
            await server.serve_forever()
    finally:
        if follow is not None:
            follow.cancel()


def proxy_db(name: str, port: int, host: str) -> None:
    """The ``bsh proxy db`` command body."""
    profile = current_profile()
    db_context(profile, name)  # no certificate at all: one line now, not per connection
    certs = ListenerCerts(profile, name)
    try:
        tune_runtime()  # a long-lived relay: the daemon's malloc and GC tuning
        run_loop(run_proxy_db(profile, certs.context, name, host, port))  # uvloop: its TLS in C
    except KeyboardInterrupt:
        pass
