"""A throwaway MariaDB server for tests and benches: TLS with client certificates only.

Layer: ``testing`` (test launcher; nothing in ``src`` imports it). :func:`start_mariadb` runs
``mariadb-install-db --auth-root-authentication-method=normal`` into a fresh directory, then
``mariadbd`` listening on 127.0.0.1 only (a free port) with the given server certificate, key
and CA (``ssl_cert``/``ssl_key``/``ssl_ca``) and ``require_secure_transport``, durability off
for speed. The superuser reaches it over its unix socket (:meth:`MariaDBServer.sql`) to create
the accounts the tests use, such as::

    CREATE USER alice_db@'%' REQUIRE SUBJECT '/CN=alice_db/O=test.local';

which logs in with no password, only over TLS with a client certificate of that subject
signed by the server's CA (the database agent's db-CA certificate). :meth:`MariaDBServer.stop`
stops it and removes its files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bastion.testing.peers.ports import free_port

__all__ = ["MariaDBServer", "MariaDBUnavailable", "find_mariadb_bin", "start_mariadb"]


class MariaDBUnavailable(RuntimeError):
    """The MariaDB server binaries are not installed (tests skip, or fail under CI)."""


def find_mariadb_bin(*names: str) -> str:
    """Path of the first of ``names`` found on PATH or in /usr/sbin."""
    for name in names:
        found = shutil.which(name) or (
            f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None
        )
        if found:
            return found
    raise MariaDBUnavailable(
        f"MariaDB binary {names[0]!r} not found; install mariadb-server and mariadb-client"
    )


@dataclass
class MariaDBServer:
    host: str
    port: int
    root: Path
    socket: Path
    _proc: subprocess.Popen[bytes] = field(repr=False)

    def sql(self, sql: str, database: str = "") -> str:
        """Run ``sql`` as root over the unix socket; returns the tab-separated output."""
        done = subprocess.run(
            [find_mariadb_bin("mariadb", "mysql"), "--no-defaults", f"--socket={self.socket}"]
            + ["-uroot", "-N", "-B", "-e", sql, *([database] if database else [])],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb failed: {done.stderr.strip()}")
        return done.stdout

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_mariadb(
    tmpdir: str | os.PathLike[str] | None, cert_pem: str, key_pem: str, ca_pem: str
) -> MariaDBServer:
    """Start a server accepting TCP only on 127.0.0.1 and only over TLS.

    Raises:
        MariaDBUnavailable: the binaries are missing.
        RuntimeError: it did not start (the message holds its error log).
    """
    install = find_mariadb_bin("mariadb-install-db", "mysql_install_db")
    mariadbd = find_mariadb_bin("mariadbd", "mysqld")
    root = Path(tempfile.mkdtemp(prefix="bastion-mariadb-", dir=tmpdir))
    data, sock, tmp = root / "data", root / "mysql.sock", root / "tmp"
    tmp.mkdir()
    for name, text in (("server.crt", cert_pem), ("server.key", key_pem), ("ca.crt", ca_pem)):
        (root / name).write_text(text)
    (root / "server.key").chmod(0o600)
    user = ["--user=root"] if os.geteuid() == 0 else []
    done = subprocess.run(
        [install, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal"]
        + ["--skip-test-db", "--skip-name-resolve", f"--tmpdir={tmp}", *user],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"mariadb-install-db failed: {done.stderr or done.stdout}")
    port = free_port()
    log = root / "error.log"
    proc = subprocess.Popen(
        [mariadbd, "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}"]
        + ["--bind-address=127.0.0.1", f"--pid-file={root / 'mariadbd.pid'}"]
        + [f"--log-error={log}", "--skip-name-resolve", "--skip-log-bin", f"--tmpdir={tmp}"]
        + [f"--ssl-cert={root / 'server.crt'}", f"--ssl-key={root / 'server.key'}"]
        + [f"--ssl-ca={root / 'ca.crt'}", "--require-secure-transport=ON"]
        + ["--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0"]
        + ["--innodb-doublewrite=0", "--max-connections=300", "--performance-schema=OFF"]
        + user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = MariaDBServer("127.0.0.1", port, root, sock, proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if sock.exists():
            try:
                server.sql("select 1")
                return server
            except RuntimeError:
                pass
        time.sleep(0.1)
    text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    server.stop()
    raise RuntimeError(f"mariadbd did not start: {text}")
