"""A throwaway PostgreSQL server for tests (contract and integration layers).

Not used in production. :func:`start_postgres` runs ``initdb`` + ``pg_ctl start`` on a free
loopback port with trust authentication, the unix socket inside the data directory and
durability off (``fsync=off``) for speed; :meth:`PgServer.stop` shuts it down and removes it.
:func:`create_database` gives each test its own database.

``initdb`` refuses to run as root: under root the binaries run through
``runuser -u postgres --`` in a fresh directory under the system temp dir owned by ``postgres``
(pytest's own tmp dirs are ``0700 root`` and not reachable by that user).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bastion.testing.peers.ports import free_port

__all__ = ["PgServer", "PostgresUnavailable", "create_database", "find_pg_bin", "start_postgres"]

_SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql*/bin")


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed (tests skip, or fail under CI)."""


@dataclass
class PgServer:
    """A running throwaway server. ``dsn`` points at the ``postgres`` database as superuser."""

    dsn: str
    host: str
    port: int
    user: str
    root: Path
    _pg_ctl: str = field(repr=False)
    _prefix: list[str] = field(repr=False)
    _owned_root: bool = field(repr=False)

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def restart(self) -> None:
        """Restart the server on the same port and data (``pg_ctl restart`` reuses the start
        options): every client connection is cut, as in a database fail-over."""
        _run(
            [*self._prefix, self._pg_ctl, "-D", str(self.root / "data"), "-m", "fast", "-w"]
            + ["-t", "60", "-l", str(self.root / "log"), "restart"],
            "pg_ctl restart",
        )

    def stop(self) -> None:
        """Stop the server (immediate mode: the data is thrown away) and remove its files."""
        subprocess.run(
            [*self._prefix, self._pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "-w"]
            + ["stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if self._owned_root:
            shutil.rmtree(self.root, ignore_errors=True)


def find_pg_bin(name: str) -> str:
    """Path of a PostgreSQL server binary, from PATH or the usual install directories."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in _SEARCH:
        for directory in sorted(glob.glob(pattern), reverse=True):
            candidate = os.path.join(directory, name)
            if os.access(candidate, os.X_OK):
                return candidate
    raise PostgresUnavailable(
        f"PostgreSQL server binary {name!r} not found on PATH or under /usr/lib/postgresql/*/bin;"
        " install the postgresql server package"
    )


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr or done.stdout}")


def start_postgres(tmpdir: str | os.PathLike[str], attempts: int = 3) -> PgServer:
    """Initialise and start a server under ``tmpdir`` (or a postgres-owned temp dir under root).

    Raises:
        PostgresUnavailable: ``initdb``/``pg_ctl`` are missing.
        RuntimeError: initdb or the server start failed (the message holds their output).
    """
    initdb, pg_ctl = find_pg_bin("initdb"), find_pg_bin("pg_ctl")
    as_root = os.geteuid() == 0
    if as_root:
        root = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    else:
        root = Path(tmpdir) / f"pg-{uuid.uuid4().hex[:8]}"
        root.mkdir(parents=True)
        prefix = []
    data, sock_dir = root / "data", root / "sock"
    user = "postgres"
    _run(
        [*prefix, initdb, "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8"]
        + ["--locale=C", "--no-sync"],
        "initdb",
    )
    sock_dir.mkdir()
    if as_root:
        shutil.chown(sock_dir, "postgres", "postgres")
    last_error: Exception | None = None
    for _ in range(attempts):
        port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {sock_dir} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        try:
            _run(
                [*prefix, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log")]
                + ["-w", "-t", "60", "start"],
                "pg_ctl start",
            )
        except RuntimeError as exc:  # most likely the port was taken meanwhile: try another
            last_error = exc
            continue
        return PgServer(
            dsn=f"postgresql://{user}@127.0.0.1:{port}/postgres",
            host="127.0.0.1",
            port=port,
            user=user,
            root=root,
            _pg_ctl=pg_ctl,
            _prefix=prefix,
            _owned_root=as_root,
        )
    log = (root / "log").read_text(errors="replace") if (root / "log").exists() else ""
    raise RuntimeError(f"could not start postgres: {last_error}\n{log[-2000:]}")


async def create_database(server: PgServer, name: str | None = None) -> str:
    """Create a fresh database on ``server``; returns its DSN."""
    import asyncpg

    name = name or f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(server.dsn, timeout=30)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0', timeout=60)
    finally:
        await conn.close(timeout=10)
    return server.dsn_for(name)
