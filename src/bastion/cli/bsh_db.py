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
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.cli.common import handle_errors
from bastion.cli.identity import run_async
from bastion.cli.profile_api import check_label_filters, current_profile, profile_send
from bastion.cli.render import print_json, print_table
from bastion.client.profile import Profile
from bastion.client.proxy_conn import split_host_port
from bastion.client.tls import pem_context
from bastion.contract.db import DB_LIST, DB_USER_CERT, DbInfo, DbListQuery, DbUserCertRequest
from bastion.errors import BadParameter, NotFound, RemoteProtocolError
from bastion.files import write_private_file
from bastion.protocols.alpn import ALPN_POSTGRES
from bastion.protocols.postgres import (
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    error_response,
    parse_startup_packet,
)

__all__ = [
    "db_context",
    "db_group",
    "db_rows",
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
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = DbUserCertRequest.model_validate(
        {
            "db_service": name,
            "db_user": db_user,
            "db_name": db_name,
            "public_key": pub.decode(),
            "ttl": ttl,
        }
    )

    reply = profile_send(profile, DB_USER_CERT, body)
    cert, ca, expires = reply.cert, reply.ca, reply.expires
    write_private_file(Path(f"{files}.key"), key_pem)
    write_private_file(Path(f"{files}.crt"), cert)
    write_private_file(Path(f"{files}.ca"), ca)
    host, port = split_host_port(profile.proxy)
    service = profile.path / "pg_service.conf"
    old = service.read_text() if service.is_file() else ""
    entry = service_entry(name, host, port, db_user, db_name, files)
    write_private_file(service, update_service_file(old, name, entry))
    return service, expires


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
    entry = _entry(profile, name)
    stale = not entry or not _valid(files)
    if (db_user and entry.get("user") != db_user) or (db_name and entry.get("dbname") != db_name):
        stale = True
    if stale:
        _login(name, db_user or entry.get("user", ""), db_name or entry.get("dbname", ""), "12h")
    psql = shutil.which("psql")
    if psql is None:
        raise NotFound(
            "psql not found: install the PostgreSQL client (apt install postgresql-client)"
        )
    env = {**os.environ, "PGSERVICEFILE": str(profile.path / "pg_service.conf")}
    env.pop("PGSERVICE", None)
    sys.stdout.flush()
    os.execvpe(psql, [psql, f"service=bastion-{name}", *psql_args], env)  # noqa: S606


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
    removed = []
    for one in names:
        files = _files(profile, one)
        gone = False
        for suffix in (".crt", ".key", ".ca"):
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


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
    finally:
        dst.close()


async def _serve_local(
    profile: Profile,
    ctx: ssl.SSLContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    try:
        try:
            startup = await asyncio.wait_for(_local_startup(reader, writer), 30)
            host, port = split_host_port(profile.proxy)
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=host), 15
            )
        except (OSError, TimeoutError, RemoteProtocolError, BadParameter) as exc:
            writer.write(error_response(f"bsh proxy db: {exc}", code="08006"))
            await writer.drain()
            return
        up_w.write(startup)
        await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer), return_exceptions=True)
    finally:
        writer.close()


def db_context(profile: Profile, name: str) -> ssl.SSLContext:
    """TLS to the proxy with the database certificate of ``name`` (ALPN bastion-postgres/1)."""
    files = _files(profile, name)
    if not Path(f"{files}.crt").is_file():
        raise NotFound(f"no certificate for database {name}: run bsh db login {name}")
    return pem_context(
        Path(f"{files}.ca").read_text(),
        Path(f"{files}.crt").read_text(),
        alpn=[ALPN_POSTGRES],
        key_file=Path(f"{files}.key"),
    )


async def run_proxy_db(
    profile: Profile, ctx: ssl.SSLContext, name: str, host: str, port: int
) -> None:
    """Serve the local listener until cancelled."""
    server = await asyncio.start_server(lambda r, w: _serve_local(profile, ctx, r, w), host, port)
    bound = server.sockets[0].getsockname()[1]
    sys.stderr.write(
        f"bsh proxy db {name}: listening on {host}:{bound}; "
        f"psql -h {host} -p {bound} (sslmode=disable is fine: TLS starts here)\n"
    )
    sys.stderr.flush()
    async with server:
        await server.serve_forever()


def proxy_db(name: str, port: int, host: str) -> None:
    """The ``bsh proxy db`` command body."""
    profile = current_profile()
    try:
        run_async(run_proxy_db(profile, db_context(profile, name), name, host, port))
    except KeyboardInterrupt:
        pass
