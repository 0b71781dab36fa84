"""A throwaway PostgreSQL that accepts only TLS with client certificates (``hostssl ... cert``).

Layer: ``testing`` (test launcher; nothing in ``src`` imports it). Builds on
:func:`bastion.testing.peers.postgres.start_postgres` (initdb and pg_ctl as the ``postgres`` user
under root), then writes the server certificate, key and CA into the data directory, turns
``ssl`` on and replaces ``pg_hba.conf`` with::

    local   all all                 trust
    hostssl all all 127.0.0.1/32    cert clientcert=verify-full

and restarts. Local superuser access over the unix socket stays (``psql -h SOCKDIR``) to create
roles and data for the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from bastion.testing.peers.postgres import PgServer, find_pg_bin, start_postgres

__all__ = ["psql_local", "start_postgres_tls"]


def start_postgres_tls(
    tmpdir: str | os.PathLike[str], cert_pem: str, key_pem: str, ca_pem: str
) -> PgServer:
    """Start a server requiring TLS client certificates signed by ``ca_pem`` on 127.0.0.1."""
    server = start_postgres(tmpdir)
    data = server.root / "data"
    owner = os.geteuid() == 0
    for name, text, mode in (
        ("server.crt", cert_pem, 0o644),
        ("server.key", key_pem, 0o600),
        ("root.crt", ca_pem, 0o644),
    ):
        path = data / name
        path.write_text(text)
        path.chmod(mode)
        if owner:
            shutil.chown(path, "postgres", "postgres")
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            "ssl_ca_file = 'root.crt'\n"
        )
    (data / "pg_hba.conf").write_text(
        "local all all trust\nhostssl all all 127.0.0.1/32 cert clientcert=verify-full\n"
    )
    server.restart()
    return server


def psql_local(server: PgServer, sql: str, database: str = "postgres") -> str:
    """Run ``sql`` as the superuser over the unix socket; returns the output."""
    done = subprocess.run(
        [
            find_pg_bin("psql"),
            "-h",
            str(server.root / "sock"),
            "-p",
            str(server.port),
            "-U",
            server.user,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}")
    return done.stdout
