"""Database access: ``pgbench -S`` through our proxy versus direct and versus pgbouncer.

One run on loopback (:mod:`bastion.testing.db_rig`): a real PostgreSQL requiring db-CA client
certificates (``hostssl ... cert``), our proxy on its one port (psql/pgbench reach it in-band
with an SSLRequest, TLS with a routed database certificate) relaying through a database agent on
a real reverse tunnel (TLS again to PostgreSQL), with per-query audit ON. Every path is TLS with
client certificates end to end:

* **direct**: pgbench straight to PostgreSQL with a db-CA client certificate;
* **pgbouncer** (if installed, Debian package ``pgbouncer``): ``auth_type = cert`` for clients,
  TLS with a client certificate to PostgreSQL, ``pool_mode = transaction``;
* **ours**: pgbench to the proxy port;
* **ours (bsh)**: pgbench to ``bsh proxy db``'s local listener (a child process, as on the
  user's machine: its CPU is printed apart), TLS from there to the proxy;
* **haproxy** (if installed, Debian package ``haproxy``): a plain TCP relay in front of the
  database, one thread, TLS end to end between pgbench and PostgreSQL (it neither decrypts,
  parses nor audits): what one more hop through a C process costs on this machine. Also in
  front of MariaDB.
* **python floor** (``bench/tls_floor.py``, its own process): a uvloop relay that terminates
  TLS on both legs as our proxy does and moves bytes, no parsing, no authorization, no audit:
  what any TLS-terminating proxy in Python reaches here. Also in front of MariaDB.
* **c floor** (``bench/tls_floor.c``, built by the bench with ``cc`` and OpenSSL's headers,
  Debian packages ``gcc`` and ``libssl-dev``; skipped when they are missing): the same relay in
  C, one thread and one epoll loop: what a TLS-terminating proxy reaches here whatever its
  language. Also in front of MariaDB.

``--rounds N`` (default 3) runs every path back to back N times and reports the median round
(and the spread of the ratios): a machine whose speed drifts moves the paths of one round
together, not the peer of one run and ours of another.

Measurements: ``pgbench -S -c CLIENTS -T SECONDS`` TPS on each path, and connection set-up with
``pgbench -S -C -c 1`` (a new connection per transaction: TLS, startup, authorization, the
agent's TLS to the database) direct, through the Python floor (its own TLS connection to the
database per client), through pgbouncer (which keeps its server connections: for reference)
and through ours. Ratios are printed ours/direct and ours/pgbouncer; nothing is
asserted (the smoke test only checks that the numbers exist).

MySQL/MariaDB in the same run (:mod:`bastion.testing.mysql_rig`, when ``mariadb-slap`` and
``mariadbd`` are installed): ``mariadb-slap -c CLIENTS`` running a point SELECT

* **direct** to MariaDB over TLS with a db-CA client certificate (``REQUIRE SUBJECT``);
* **ours**: to ``bsh proxy db``'s local listener (a child process, as on the user's machine;
  its CPU is printed apart), TLS to the proxy, the agent's TLS to MariaDB, per-query audit on;
* **ours (MySQL port)**: to the proxy's dedicated MySQL port with the user's certificate (as
  pgbench reaches the proxy port);

and the ratios ours/direct in queries per second (target 0.7x). Then a bulk insert: MariaDB
Connector/Python's ``executemany`` of 1,000 rows at a time (one ``COM_STMT_BULK_EXECUTE`` each),
direct and through the proxy's MySQL port, every row audited with its parameters: rows per
second and the ratio. Then ``mariadb-slap --compress`` fetching ~18 KB answers
(:data:`ZIP_QUERY`), direct and through the proxy's MySQL port (the proxy inflates the
client's frames and compresses the answers), and the same without ``--compress``.
``--no-mysql`` skips it.

Every run also prints the **CPU per transaction** of our process (proxy, agent, auth and its
audit log: all in this process, plus the SQLite writer's child process), net of its idle rate,
and pgbouncer's: steadier than rates on a machine other jobs load (the load average is printed
too). Auth runs over the SQLite backend ``bastion start`` uses, its writer in a process of its
own as ``bastion start`` runs it (``--sqlite-writer thread``: on a worker thread;
``--memory-backend``: the test backend).

Run: ``python bench/db.py`` (about 6 minutes: 3 rounds of ``-T 15`` as the issue asks) or
``--quick`` (one round of 2 s runs). ``--agent-process``: the agent in a process of its own, as
on the database's host (its CPU printed apart); the default is a remote agent in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bastion.backend.sqlite_writer import CHILD_MODULE
from bastion.config.schema import StorageConfig
from bastion.logging import configure_logging
from bastion.runtime import event_loop_name, tune_runtime
from bastion.runtime import run as run_loop
from bastion.testing.db_rig import AgentSpec, DbRig, run_agent, start_db_rig
from bastion.testing.peers.ports import free_port
from bastion.testing.peers.postgres import find_pg_bin
from bastion.testing.peers.postgres_tls import psql_local
from bastion.testing.procs import children_running

_TPS = re.compile(r"tps = ([0-9.]+) \((?:without initial connection|including reconnection) time")
_CONNECT = re.compile(r"average connection time = ([0-9.]+) ms")
_SLAP = re.compile(r"Average number of seconds to run all queries: ([0-9.]+) seconds")
_TXNS = re.compile(r"number of transactions actually processed: ([0-9]+)")
SLAP_QUERY = "select s from t where x = 1"
ZIP_QUERY = "select repeat(concat(md5(rand()), ' audit trail '), 400)"
"""A ~18 KB answer (a random 32-character word among repeated text, as logs and JSON are),
fetched with ``--compress``: what a compressing client's session costs the proxy."""


OWN_HELPERS: list[int] = []
"""Processes whose work is our process's (the SQLite writer: ``storage.writer: process``)."""


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process and its :data:`OWN_HELPERS`, or of process
    ``pid`` (Linux ``/proc``)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime + sum(map(_proc_cpu_seconds, OWN_HELPERS))
    return _proc_cpu_seconds(pid)


def track_own_helpers() -> None:
    """Find this process's SQLite writer children (after the rig started) for
    :func:`cpu_seconds`."""
    OWN_HELPERS[:] = children_running(os.getpid(), CHILD_MODULE)


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


IDLE_CPU = [0.0]
"""CPU seconds per second this process spends with no client (timers, backend polling):
subtracted from each run's CPU, so a run slowed by other jobs does not look costlier."""


async def measure_idle_cpu(seconds: float = 1.0) -> None:
    start, wall = cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    IDLE_CPU[0] = (cpu_seconds() - start) / (time.monotonic() - wall)


class CpuMeter:
    """CPU microseconds per transaction of a process over one run, net of its idle rate
    (:data:`IDLE_CPU`, for this process): less sensitive to a machine loaded by other jobs than
    a rate (the work per transaction does not change with load)."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self.start = cpu_seconds(pid)
        self.wall = time.monotonic()

    def per(self, count: int) -> float:
        idle = IDLE_CPU[0] * (time.monotonic() - self.wall) if self.pid is None else 0.0
        return 1e6 * max(cpu_seconds(self.pid) - self.start - idle, 0.0) / max(count, 1)


LAST_TRANSACTIONS = [0]
"""Transactions of the last pgbench run (for CPU per transaction)."""


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


async def pgbench(conninfo: str, *args: str) -> float:
    """TPS (or, with ``-C``, the average connection time in ms) of one pgbench run."""
    proc = await asyncio.create_subprocess_exec(
        find_pg_bin("pgbench"),
        *args,
        conninfo,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    out, err = await proc.communicate()
    text = out.decode() + err.decode()
    found = (_CONNECT if "-C" in args else _TPS).search(text)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"pgbench failed ({proc.returncode}): {text[-800:]}")
    txns = _TXNS.search(text)
    LAST_TRANSACTIONS[0] = int(txns.group(1)) if txns else 0
    return float(found.group(1))


def bouncer_pid(work: Path) -> int | None:
    try:
        return int((work / "pgbouncer.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def start_pgbouncer(rig: DbRig, work: Path) -> tuple[asyncio.subprocess.Process, str]:
    """pgbouncer with client certificates in and out; returns (process, client conninfo)."""
    from bastion.testing import new_tls_key

    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    work.mkdir(parents=True, exist_ok=True)
    srv_key, srv_pub = new_tls_key()
    server = await rig.certs.server_cert(
        "localhost", srv_pub, ["localhost"], ["127.0.0.1"], timedelta(hours=1), "bench", "bench"
    )
    client_info = await rig.direct("alice_db", "bouncer-out")  # its cert to PostgreSQL
    files = {
        "srv.crt": server.cert_pem,
        "srv.key": srv_key.decode(),
        "ca.pem": server.ca_pem,
        "out.crt": (rig.tmp / "bouncer-out.crt").read_text(),
        "out.key": (rig.tmp / "bouncer-out.key").read_text(),
        "users.txt": '"alice_db" ""\n',
    }
    for name, text in files.items():
        (work / name).write_text(text)
        (work / name).chmod(0o600)
    port = free_port()
    (work / "pgbouncer.ini").write_text(
        f"""[databases]
postgres = host=127.0.0.1 port={rig.pg.port} dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = cert
auth_file = {work}/users.txt
client_tls_sslmode = verify-full
client_tls_ca_file = {work}/ca.pem
client_tls_cert_file = {work}/srv.crt
client_tls_key_file = {work}/srv.key
server_tls_sslmode = verify-ca
server_tls_ca_file = {work}/ca.pem
server_tls_cert_file = {work}/out.crt
server_tls_key_file = {work}/out.key
pool_mode = transaction
default_pool_size = 8
max_client_conn = 200
logfile = {work}/pgbouncer.log
pidfile = {work}/pgbouncer.pid
"""
    )
    prefix: list[str] = []
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        shutil.chown(work, "postgres", "postgres")
        for path in work.iterdir():
            shutil.chown(path, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    proc = await asyncio.create_subprocess_exec(
        *prefix,
        binary,
        str(work / "pgbouncer.ini"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)
    del client_info
    if proc.returncode is not None:
        log = work / "pgbouncer.log"
        raise RuntimeError(f"pgbouncer exited: {log.read_text()[-600:] if log.exists() else ''}")
    conninfo = (await rig.direct("alice_db", "bouncer-in")).replace(
        f"port={rig.pg.port}", f"port={port}"
    )
    return proc, conninfo


AGENTS: list[asyncio.subprocess.Process] = []
"""The agent processes started (``--agent-process``): their CPU is reported apart."""


async def launch_agent(spec: AgentSpec) -> Callable[[], Awaitable[None]]:
    """The database's agent in a process of its own, as on the database's host: its own event
    loop and core, a TLS tunnel to the proxy (``--agent-child``)."""
    fd, name = tempfile.mkstemp(prefix="bastion-bench-agent-", suffix=".json")
    os.close(fd)
    path = Path(name)
    path.write_text(spec.to_json())  # its keys: mkstemp made it 0600; removed at stop
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--agent-child", name)
    AGENTS.append(proc)

    async def stop() -> None:
        await _stop(proc)
        path.unlink(missing_ok=True)

    return stop


def agent_meter() -> CpuMeter | None:
    return CpuMeter(AGENTS[-1].pid) if AGENTS and AGENTS[-1].returncode is None else None


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


async def start_relay(
    binary: str, target: int, work: Path
) -> tuple[asyncio.subprocess.Process, int]:
    """HAProxy relaying TCP to ``target`` untouched (one thread, as pgbouncer and our event
    loop): the cost of one more hop in a C process that neither decrypts, parses nor audits
    (TLS stays end to end between the client and the database). Returns (process, port)."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = work / "haproxy.cfg"
    config.write_text(
        "global\n  nbthread 1\n  maxconn 4000\n"
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n"
        "  timeout server 120s\n"
        f"listen relay\n  bind 127.0.0.1:{port}\n  server db 127.0.0.1:{target}\n"
    )
    return await _listening(port, f"haproxy (see {config})", binary, "-db", "-q", "-f", str(config))


async def start_floor(
    protocol: str,
    db_port: int,
    server: tuple[Path, Path],
    client: tuple[Path, Path, Path],
    program: tuple[str, ...] = (),
) -> tuple[asyncio.subprocess.Process, int]:
    """A TLS floor in front of the database on ``db_port``: TLS to its clients with ``server``
    (the database's certificate and key), TLS to the database with ``client`` (certificate,
    key, CA). ``program``: ``bench/tls_floor.py`` (the default) or the C floor that
    :func:`build_c_floor` made. Returns (process, port)."""
    port = free_port()
    cert, key, ca = client
    argv = [protocol, str(port), str(db_port), *map(str, (*server, ca, cert, key))]
    program = program or (sys.executable, str(Path(__file__).with_name("tls_floor.py")))
    return await _listening(port, Path(program[-1]).name, *program, *argv)


def build_c_floor(work: Path) -> str | None:
    """``bench/tls_floor.c`` compiled into ``work`` (the C twin of ``tls_floor.py``, on
    OpenSSL), or None, with the reason on stderr, when no C compiler or OpenSSL headers are
    here (Debian packages ``gcc``, ``libssl-dev``)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        print("bench/db.py: no C compiler, the C floor is skipped", file=sys.stderr)
        return None
    binary = work / "tls_floor"
    source = Path(__file__).with_name("tls_floor.c")
    built = subprocess.run(  # noqa: S603 - our own source, our compiler
        [compiler, "-O2", "-o", str(binary), str(source), "-lssl", "-lcrypto"],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        print(f"bench/db.py: the C floor did not build: {built.stderr[-400:]}", file=sys.stderr)
        return None
    return str(binary)


async def _listening(port: int, what: str, *argv: str) -> tuple[asyncio.subprocess.Process, int]:
    """Start ``argv`` and wait until it accepts connections on ``port``."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if proc.returncode is not None:
                raise RuntimeError(f"{what} exited ({proc.returncode})") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return proc, port
    await _stop(proc)
    raise RuntimeError(f"{what} did not listen")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    secs = str(args.seconds)
    with tempfile.TemporaryDirectory(prefix="bastion-bench-db-") as tmp:
        rig_cm = start_db_rig(
            Path(tmp),
            audit_queries=not args.no_audit,
            colocated=args.colocated,
            sqlite=not args.memory_backend,
            sqlite_writer=args.sqlite_writer,
            keep_events=False,  # counts only: a list of every event is not the proxy's cost
            launch_agent=launch_agent if args.agent_process else None,
        )
        async with rig_cm as rig:
            track_own_helpers()
            sock = str(rig.pg.root / "sock")
            init = await asyncio.create_subprocess_exec(
                find_pg_bin("pgbench"),
                "-i",
                "-q",
                "-s",
                "1",
                "-h",
                sock,
                "-p",
                str(rig.pg.port),
                "-U",
                "postgres",
                "postgres",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await init.wait()
            psql_local(rig.pg, "grant select on all tables in schema public to alice_db")
            direct = await rig.direct("alice_db", "direct")
            ours = await rig.login("alice_db", "ours")
            load = ["-n", "-S", "-c", str(args.clients), "-j", "2", "-T", secs]
            connect = ["-n", "-S", "-C", "-c", "1", "-T", secs]
            result: dict[str, Any] = {
                "seconds": args.seconds,
                "clients": args.clients,
                "rounds": args.rounds,
            }
            result["agent"] = (
                "co-located (in process, no tunnel)"
                if args.colocated
                else "remote, its own process (TLS tunnel)"
                if args.agent_process
                else "remote (TLS tunnel, in this process)"
            )
            result["load_before"] = load_average()
            await measure_idle_cpu()
            result["idle_cpu_percent"] = 100 * IDLE_CPU[0]
            bouncer_proc = bouncer = None
            if shutil.which("pgbouncer") or Path("/usr/sbin/pgbouncer").exists():
                bouncer_proc, bouncer = await start_pgbouncer(rig, rig.pg.root / "bouncer")
            files = rig.tmp
            bsh, bsh_port = await start_bsh_listener(
                "postgres", rig.port, files / "ours.ca", files / "ours.crt", files / "ours.key"
            )
            local = f"host=127.0.0.1 port={bsh_port} user=alice_db dbname=postgres sslmode=disable"
            relay_proc = relay = None
            if (haproxy := haproxy_binary()) is not None:
                relay_proc, relay_port = await start_relay(haproxy, rig.pg.port, rig.tmp / "relay")
                relay = direct.replace(f"port={rig.pg.port}", f"port={relay_port}")
            data = rig.pg.root / "data"
            certs = (
                (data / "server.crt", data / "server.key"),
                (files / "direct.crt", files / "direct.key", files / "direct.ca"),
            )
            floor_proc, floor_port = await start_floor("postgres", rig.pg.port, *certs)
            floor = f"host=127.0.0.1 port={floor_port} user=alice_db dbname=postgres"
            floor += " sslmode=require"
            cfloor_proc = cfloor = None
            if args.c_floor is not None:
                cfloor_proc, cfloor_port = await start_floor(
                    "postgres", rig.pg.port, *certs, (args.c_floor,)
                )
                cfloor = floor.replace(f"port={floor_port}", f"port={cfloor_port}")
            rounds: list[dict[str, float]] = []
            try:
                for _ in range(args.rounds):
                    # Every path in each round, back to back: a machine whose speed drifts
                    # (other jobs, a noisy host) moves them together; the median round is
                    # reported.
                    one: dict[str, float] = {"direct_tps": await pgbench(direct, *load)}
                    if bouncer is not None and bouncer_proc is not None:
                        pid = bouncer_pid(rig.pg.root / "bouncer")
                        bmeter = CpuMeter(pid) if pid is not None else None
                        one["pgbouncer_tps"] = await pgbench(bouncer, *load)
                        if bmeter is not None:
                            one["pgbouncer_cpu_us_per_txn"] = bmeter.per(LAST_TRANSACTIONS[0])
                    if relay is not None and relay_proc is not None:
                        rmeter = CpuMeter(relay_proc.pid)
                        one["relay_tps"] = await pgbench(relay, *load)
                        one["relay_cpu_us_per_txn"] = rmeter.per(LAST_TRANSACTIONS[0])
                    fmeter = CpuMeter(floor_proc.pid)
                    one["floor_tps"] = await pgbench(floor, *load)
                    one["floor_cpu_us_per_txn"] = fmeter.per(LAST_TRANSACTIONS[0])
                    if cfloor is not None and cfloor_proc is not None:
                        fmeter = CpuMeter(cfloor_proc.pid)
                        one["cfloor_tps"] = await pgbench(cfloor, *load)
                        one["cfloor_cpu_us_per_txn"] = fmeter.per(LAST_TRANSACTIONS[0])
                    ended = rig.audit.counts["db.session.end"]
                    meter, ameter = CpuMeter(), agent_meter()
                    one["ours_tps"] = await pgbench(ours, *load)
                    transactions = LAST_TRANSACTIONS[0]
                    await _sessions_ended(rig, ended + args.clients)
                    # Our process: proxy, agent, auth and its audit log (all, until audited).
                    one["ours_cpu_us_per_txn"] = meter.per(transactions)
                    if ameter is not None:
                        one["agent_cpu_us_per_txn"] = ameter.per(transactions)
                    ended = rig.audit.counts["db.session.end"]
                    meter, bsh_meter = CpuMeter(), CpuMeter(bsh.pid)
                    one["bsh_tps"] = await pgbench(local, *load)
                    transactions = LAST_TRANSACTIONS[0]
                    await _sessions_ended(rig, ended + args.clients)
                    one["bsh_cpu_us_per_txn"] = meter.per(transactions)
                    one["bsh_own_cpu_us_per_txn"] = bsh_meter.per(transactions)
                    rounds.append(one)
                result["direct_connect_ms"] = await pgbench(direct, *connect)
                if bouncer is not None:  # its server connections stay open: for reference
                    result["pgbouncer_connect_ms"] = await pgbench(bouncer, *connect)
                result["floor_connect_ms"] = await pgbench(floor, *connect)
                meter = CpuMeter()
                result["ours_connect_ms"] = await pgbench(ours, *connect)
                result["ours_cpu_us_per_connection"] = meter.per(LAST_TRANSACTIONS[0])
            finally:
                await _stop(bsh)
                for peer in (bouncer_proc, relay_proc, floor_proc, cfloor_proc):
                    if peer is not None:
                        await _stop(peer)
            result["pg_rounds"] = rounds
            result.update(median_round(rounds, "ours_tps", "pgbouncer_tps", "direct_tps"))
            result["audited_queries"] = rig.audit.counts["db.session.query"]
            result["load_after"] = load_average()
    return result


async def _sessions_ended(rig: Any, target: int) -> None:
    """Wait until ``target`` database sessions ended in all (each one's statements are
    committed before its end event): a run's CPU then includes its whole audit."""
    for _ in range(250):
        if rig.audit.counts["db.session.end"] >= target:
            return
        await asyncio.sleep(0.02)


def median_round(rounds: list[dict[str, float]], key: str, *peers: str) -> dict[str, float]:
    """The round with the median ``key`` / first present peer ratio (its numbers, whole)."""
    peer = next((p for p in peers if all(p in r for r in rounds)), peers[-1])
    ranked = sorted(rounds, key=lambda r: r[key] / r[peer])
    return dict(ranked[(len(ranked) - 1) // 2])


async def start_bsh_listener(
    protocol: str, proxy_port: int, ca: Path, crt: Path, key: Path
) -> tuple[asyncio.subprocess.Process, int]:
    """``bsh proxy db``'s listener in a child process (as on the user's machine: its CPU is
    its own, reported apart); returns the process and its port."""
    bsh = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--bsh-listener", protocol, f"127.0.0.1:{proxy_port}",
        str(ca), str(crt), str(key),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert bsh.stdout is not None
    port = int((await asyncio.wait_for(bsh.stdout.readline(), 30)).decode() or "0")
    if not port:
        await _stop(bsh)
        raise RuntimeError("bsh proxy db's listener did not start")
    return bsh, port


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    await proc.wait()


async def slap(
    port: int, clients: int, queries: int, *tls: str, query: str = SLAP_QUERY, zlib: bool = False
) -> float:
    """Queries per second of one ``mariadb-slap`` run (``tls``: client certificate options;
    ``zlib``: the compressed protocol)."""
    from bastion.testing.peers.mariadb import find_mariadb_bin

    proc = await asyncio.create_subprocess_exec(
        find_mariadb_bin("mariadb-slap", "mysqlslap"), "--no-defaults", "-h127.0.0.1",
        f"-P{port}", "-ualice_db", *(tls or ("--skip-ssl",)), "--create-schema=app",
        "--no-drop", f"--query={query}", f"--concurrency={clients}",
        *(("--compress",) if zlib else ()),
        f"--number-of-queries={queries}", "--iterations=1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    text = out.decode() + err.decode()
    found = _SLAP.search(text)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"mariadb-slap failed ({proc.returncode}): {text[-800:]}")
    return queries / max(float(found.group(1)), 0.001)


BULK_CHUNK = 1000
"""Rows per ``executemany`` (one COM_STMT_BULK_EXECUTE packet each)."""


async def bulk_insert(
    port: int, files: Any, rows: int, audited: Callable[[], int] | None = None
) -> tuple[float, float]:
    """Rows per second of :func:`bulk_child` in a process of its own (a client, as on the
    user's machine: neither its CPU nor its GIL is ours), and with ``audited`` (the count of
    audited statements) the rows per second until every row is in the audit log too."""
    before = audited() if audited is not None else 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--bulk-child", str(port), str(files.crt), str(files.key),
        str(files.ca), str(rows), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 600)
    if proc.returncode != 0:
        raise RuntimeError(f"bulk insert failed: {err.decode()[-800:]}")
    started, elapsed = (float(v) for v in out.decode().split()[-2:])
    if audited is None:
        return rows / elapsed, 0.0
    while audited() < before + rows:  # the statements around the rows are audited too
        await asyncio.sleep(0.005)
    return rows / elapsed, rows / (time.time() - started)


def bulk_child(port: str, crt: str, key: str, ca: str, count: str) -> None:
    """Insert ``count`` rows with MariaDB Connector/Python's ``executemany`` (TLS with the
    client certificate), committed; print the rows per second; empty the table after."""
    import mariadb

    rows = int(count)
    conn = mariadb.connect(
        host="127.0.0.1", port=int(port), user="alice_db", database="app", connect_timeout=15,
        ssl_cert=crt, ssl_key=key, ssl_ca=ca,
    )  # fmt: skip
    try:
        cur = conn.cursor()
        cur.execute("create table if not exists bulk_bench (x int, s varchar(40))")
        data = [(n, f"row {n} of the bulk bench") for n in range(rows)]
        cur.executemany("insert into bulk_bench values (?, ?)", data[:BULK_CHUNK])  # warm-up
        cur.execute("truncate table bulk_bench")
        started, start = time.time(), time.perf_counter()
        for at in range(0, rows, BULK_CHUNK):
            cur.executemany("insert into bulk_bench values (?, ?)", data[at : at + BULK_CHUNK])
        conn.commit()
        elapsed = time.perf_counter() - start
        cur.execute("select count(*) from bulk_bench")
        (stored,) = cur.fetchone()
        if stored != rows:
            raise RuntimeError(f"bulk insert stored {stored} of {rows} rows")
        cur.execute("truncate table bulk_bench")
        print(started, elapsed, flush=True)
    finally:
        conn.close()


async def run_mysql(args: argparse.Namespace) -> dict[str, Any]:
    """mariadb-slap direct versus through bsh proxy db, the proxy and the agent."""
    from bastion.testing.mysql_rig import start_mysql_rig

    queries = 2000 * args.seconds * args.clients // 8
    bulk = queries * 2  # rows of the bulk insert
    zips = queries // 8  # queries of ZIP_QUERY
    with tempfile.TemporaryDirectory(prefix="bastion-bench-mysql-") as tmp:
        rig_cm = start_mysql_rig(
            Path(tmp),
            audit_queries=not args.no_audit,
            colocated=args.colocated,
            sqlite=not args.memory_backend,
            sqlite_writer=args.sqlite_writer,
            keep_events=False,
            launch_agent=launch_agent if args.agent_process else None,
        )
        async with rig_cm as rig:
            track_own_helpers()
            direct = await rig.direct("alice_db", "direct")
            ours = await rig.login("alice_db", "ours")
            # bsh proxy db runs on the user's machine: its own process here too, its CPU
            # reported apart (in this process it took a third of the CPU per query and
            # competed with the proxy for the same core).
            bsh, port = await start_bsh_listener(
                "mysql", rig.port, Path(ours.ca), Path(ours.crt), Path(ours.key)
            )
            tls = (f"--ssl-cert={direct.crt}", f"--ssl-key={direct.key}", f"--ssl-ca={direct.ca}")
            mine = (f"--ssl-cert={ours.crt}", f"--ssl-key={ours.key}", f"--ssl-ca={ours.ca}")
            result: dict[str, Any] = {"mysql_queries": queries}
            relay_proc = None
            if (haproxy := haproxy_binary()) is not None:
                relay_proc, relay_port = await start_relay(
                    haproxy, rig.server.port, rig.tmp / "relay"
                )
            root = rig.server.root
            certs = (
                (root / "server.crt", root / "server.key"),
                (direct.crt, direct.key, direct.ca),
            )
            floor_proc, floor_port = await start_floor("mysql", rig.server.port, *certs)
            cfloor_proc = None
            if args.c_floor is not None:
                cfloor_proc, cfloor_port = await start_floor(
                    "mysql", rig.server.port, *certs, (args.c_floor,)
                )
            await measure_idle_cpu()
            rounds: list[dict[str, float]] = []
            try:
                for _ in range(args.rounds):
                    one = {
                        "mysql_direct_qps": await slap(rig.server.port, args.clients, queries, *tls)
                    }
                    if relay_proc is not None:
                        rmeter = CpuMeter(relay_proc.pid)
                        one["mysql_relay_qps"] = await slap(relay_port, args.clients, queries, *tls)
                        one["mysql_relay_cpu_us_per_query"] = rmeter.per(queries)
                    fmeter = CpuMeter(floor_proc.pid)
                    one["mysql_floor_qps"] = await slap(floor_port, args.clients, queries, *tls)
                    one["mysql_floor_cpu_us_per_query"] = fmeter.per(queries)
                    if cfloor_proc is not None:
                        fmeter = CpuMeter(cfloor_proc.pid)
                        one["mysql_cfloor_qps"] = await slap(
                            cfloor_port, args.clients, queries, *tls
                        )
                        one["mysql_cfloor_cpu_us_per_query"] = fmeter.per(queries)
                    meter, ameter = CpuMeter(), agent_meter()
                    one["mysql_port_qps"] = await slap(rig.mysql_port, args.clients, queries, *mine)
                    one["mysql_port_cpu_us_per_query"] = meter.per(queries)
                    if ameter is not None:
                        one["mysql_agent_cpu_us_per_query"] = ameter.per(queries)
                    meter, bsh_meter = CpuMeter(), CpuMeter(bsh.pid)
                    one["mysql_ours_qps"] = await slap(port, args.clients, queries)
                    # The proxy, the agent and auth (this process); bsh proxy db (its own).
                    one["mysql_ours_cpu_us_per_query"] = meter.per(queries)
                    one["mysql_bsh_cpu_us_per_query"] = bsh_meter.per(queries)
                    for path, at, certs in (
                        ("direct", rig.server.port, tls),
                        ("port", rig.mysql_port, mine),
                    ):
                        for zlib in (True, False):
                            meter = CpuMeter()
                            key = f"zip_{path}" + ("" if zlib else "_plain")
                            one[f"{key}_qps"] = await slap(
                                at, args.clients, zips, *certs, query=ZIP_QUERY, zlib=zlib
                            )
                            if path == "port":  # our process (idle on the direct path)
                                one[f"{key}_cpu_us_per_query"] = meter.per(zips)
                    one["bulk_direct_rows_per_s"], _ = await bulk_insert(
                        rig.server.port, direct, bulk
                    )
                    meter = CpuMeter()
                    sent, stored = await bulk_insert(
                        rig.mysql_port, ours, bulk,
                        None if args.no_audit else lambda: rig.audit.counts["db.session.query"],
                    )  # fmt: skip
                    one["bulk_port_rows_per_s"], one["bulk_audited_rows_per_s"] = sent, stored
                    one["bulk_port_cpu_us_per_row"] = meter.per(bulk)
                    rounds.append(one)
            finally:
                await _stop(bsh)
                for peer in (floor_proc, cfloor_proc, relay_proc):
                    if peer is not None:
                        await _stop(peer)
            result["mysql_rounds"] = rounds
            result.update(median_round(rounds, "mysql_port_qps", "mysql_direct_qps"))
            bulk_round = median_round(rounds, "bulk_port_rows_per_s", "bulk_direct_rows_per_s")
            result.update({k: v for k, v in bulk_round.items() if k.startswith("bulk_")})
            result["bulk_rows"] = bulk
            zip_round = median_round(rounds, "zip_port_qps", "zip_direct_qps")
            result.update({k: v for k, v in zip_round.items() if k.startswith("zip_")})
            result["zip_queries"] = zips
            sessions = 2 * args.clients * args.rounds
            for _ in range(250):  # every session ended (mariadb-slap has one more: its schema)
                counts = rig.audit.counts
                if counts["db.session.end"] >= sessions and (
                    counts["db.session.query"] >= 4 * queries * args.rounds
                ):
                    break
                await asyncio.sleep(0.02)
            result["mysql_audited_queries"] = rig.audit.counts["db.session.query"]
    return result


async def bsh_listener(protocol: str, proxy: str, ca: str, crt: str, key: str) -> None:
    """``bsh proxy db``'s listener for ``protocol`` (``mysql`` or ``postgres``; the bench's
    child process): prints its port, then serves until terminated."""
    from bastion.cli.bsh_db import local_mysql_listener, local_postgres_listener
    from bastion.client.tls import pem_context
    from bastion.protocols.alpn import ALPN_MYSQL, ALPN_POSTGRES

    alpn = ALPN_MYSQL if protocol == "mysql" else ALPN_POSTGRES
    ctx = pem_context(Path(ca).read_text(), Path(crt).read_text(), alpn=[alpn], key_file=Path(key))
    listen = local_mysql_listener if protocol == "mysql" else local_postgres_listener
    local = await listen(proxy, ctx)
    print(local.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def _spread(rounds: list[dict[str, float]], key: str, peer: str) -> str:
    ratios = sorted(r[key] / r[peer] for r in rounds if key in r and peer in r)
    if len(ratios) < 2:
        return ""
    return f" (rounds {ratios[0]:.2f}x-{ratios[-1]:.2f}x)"


def report(r: dict[str, Any]) -> None:
    rounds = r.get("pg_rounds", [])
    print(
        f"pgbench -S -c {r['clients']} -T {r['seconds']}, {r.get('rounds', 1)} round(s) of every"
        " path back to back, the median round (TLS + client certificates everywhere)"
    )
    print(f"  event loop: {r.get('event_loop', 'asyncio')} (BASTION_EVENT_LOOP)")
    for n, one in enumerate(rounds, 1):
        peer = one.get("pgbouncer_tps", one["direct_tps"])
        print(
            f"  round {n}: direct {one['direct_tps']:.0f}, pgbouncer "
            f"{one.get('pgbouncer_tps', 0):.0f}, ours {one['ours_tps']:.0f} "
            f"({one['ours_tps'] / peer:.2f}x), bsh proxy db {one['bsh_tps']:.0f} "
            f"({one['bsh_tps'] / peer:.2f}x) tps"
            + (f", haproxy relay {one['relay_tps']:.0f}" if "relay_tps" in one else "")
            + f", python floor {one['floor_tps']:.0f} ({one['floor_tps'] / peer:.2f}x)"
            + (
                f", c floor {one['cfloor_tps']:.0f} ({one['cfloor_tps'] / peer:.2f}x)"
                if "cfloor_tps" in one
                else ""
            )
        )
    print(f"  direct     {r['direct_tps']:10.0f} tps")
    if "pgbouncer_tps" in r:
        print(f"  pgbouncer  {r['pgbouncer_tps']:10.0f} tps")
    if "relay_tps" in r:
        print(
            f"  haproxy    {r['relay_tps']:10.0f} tps   (TCP relay, one thread: TLS end to end, "
            f"no parsing, no audit; {r['relay_tps'] / r['direct_tps']:.2f}x direct, "
            f"{r['relay_cpu_us_per_txn']:.0f} us CPU per transaction)"
        )
    print(
        f"  py floor   {r['floor_tps']:10.0f} tps   (uvloop relay terminating TLS on both legs "
        f"as ours, no parsing, no audit; {r['floor_tps'] / r['direct_tps']:.2f}x direct"
        + (
            f", {r['floor_tps'] / r['pgbouncer_tps']:.2f}x pgbouncer"
            if "pgbouncer_tps" in r
            else ""
        )
        + f"; {r['floor_cpu_us_per_txn']:.0f} us CPU per transaction)"
    )
    if "cfloor_tps" in r:
        print(
            f"  c floor    {r['cfloor_tps']:10.0f} tps   (the same relay in C on OpenSSL, one "
            f"thread; {r['cfloor_tps'] / r['direct_tps']:.2f}x direct"
            + (
                f", {r['cfloor_tps'] / r['pgbouncer_tps']:.2f}x pgbouncer"
                if "pgbouncer_tps" in r
                else ""
            )
            + f"; {r['cfloor_cpu_us_per_txn']:.0f} us CPU per transaction)"
        )
    audited, agent = r["audited_queries"], r.get("agent", "remote")
    print(f"  ours       {r['ours_tps']:10.0f} tps   (proxy port; agent {agent})")
    print(
        f"  ours (bsh) {r['bsh_tps']:10.0f} tps   (bsh proxy db, its listener in its own process)"
    )
    print(f"  ({audited} queries audited in all)")
    cpu = f"  CPU per transaction: ours {r['ours_cpu_us_per_txn']:.0f} us (whole process)"
    if "agent_cpu_us_per_txn" in r:
        cpu += f" + {r['agent_cpu_us_per_txn']:.0f} us in the agent's process"
    if "pgbouncer_cpu_us_per_txn" in r:
        cpu += f", pgbouncer {r['pgbouncer_cpu_us_per_txn']:.0f} us"
    cpu += f"; via bsh proxy db {r['bsh_cpu_us_per_txn']:.0f} us"
    print(cpu + f" (+ {r['bsh_own_cpu_us_per_txn']:.0f} us in bsh proxy db's process)")
    print(f"  ratio ours/direct     {r['ours_tps'] / r['direct_tps']:.2f}x")
    if "pgbouncer_tps" in r:
        spread = _spread(rounds, "ours_tps", "pgbouncer_tps")
        print(
            f"  ratio ours/pgbouncer  {r['ours_tps'] / r['pgbouncer_tps']:.2f}x port{spread}, "
            f"{r['bsh_tps'] / r['pgbouncer_tps']:.2f}x bsh proxy db  (target 0.7x)"
        )
    d_ms, o_ms = r["direct_connect_ms"], r["ours_connect_ms"]
    print("connection set-up (pgbench -C, one connection per transaction)")
    print(f"  direct {d_ms:.1f} ms, ours {o_ms:.1f} ms: ratio {o_ms / d_ms:.2f}x (target <= 2x)")
    f_ms = r["floor_connect_ms"]
    print(
        f"  py floor {f_ms:.1f} ms ({f_ms / d_ms:.2f}x direct: a new TLS connection to the"
        " database per client, as a proxy without spare connections)"
    )
    if "pgbouncer_connect_ms" in r:
        b_ms = r["pgbouncer_connect_ms"]
        print(
            f"  pgbouncer {b_ms:.1f} ms ({b_ms / d_ms:.2f}x direct;"
            " it reuses its server connections)"
        )
    print(f"  CPU per connection: ours {r['ours_cpu_us_per_connection'] / 1000:.1f} ms")
    if "mysql_ours_qps" in r:
        direct, ours = r["mysql_direct_qps"], r["mysql_ours_qps"]
        print(
            f"mariadb-slap -c {r['clients']} ({r['mysql_queries']} point selects a round, TLS"
            " everywhere), the median round"
        )
        for n, one in enumerate(r.get("mysql_rounds", []), 1):
            d = one["mysql_direct_qps"]
            print(
                f"  round {n}: direct {d:.0f}, port {one['mysql_port_qps']:.0f} "
                f"({one['mysql_port_qps'] / d:.2f}x), bsh proxy db {one['mysql_ours_qps']:.0f} "
                f"({one['mysql_ours_qps'] / d:.2f}x) q/s"
                + (
                    f", haproxy relay {one['mysql_relay_qps']:.0f} "
                    f"({one['mysql_relay_qps'] / d:.2f}x)"
                    if "mysql_relay_qps" in one
                    else ""
                )
                + f", python floor {one['mysql_floor_qps']:.0f} "
                f"({one['mysql_floor_qps'] / d:.2f}x)"
                + (
                    f", c floor {one['mysql_cfloor_qps']:.0f} ({one['mysql_cfloor_qps'] / d:.2f}x)"
                    if "mysql_cfloor_qps" in one
                    else ""
                )
            )
        print(f"  direct     {direct:10.0f} q/s")
        if "mysql_relay_qps" in r:
            relay = r["mysql_relay_qps"]
            print(
                f"  haproxy    {relay:10.0f} q/s   (TCP relay, one thread: TLS end to end, no "
                f"parsing, no audit; {relay / direct:.2f}x direct, "
                f"{r['mysql_relay_cpu_us_per_query']:.0f} us CPU per query)"
            )
        floor = r["mysql_floor_qps"]
        print(
            f"  py floor   {floor:10.0f} q/s   (uvloop relay terminating TLS on both legs as "
            f"ours, no parsing, no audit; {floor / direct:.2f}x direct, "
            f"{r['mysql_floor_cpu_us_per_query']:.0f} us CPU per query)"
        )
        if "mysql_cfloor_qps" in r:
            cfloor = r["mysql_cfloor_qps"]
            spread = _spread(r.get("mysql_rounds", []), "mysql_cfloor_qps", "mysql_direct_qps")
            print(
                f"  c floor    {cfloor:10.0f} q/s   (the same relay in C on OpenSSL, one thread; "
                f"{cfloor / direct:.2f}x direct{spread}, "
                f"{r['mysql_cfloor_cpu_us_per_query']:.0f} us CPU per query)"
            )
        port = r["mysql_port_qps"]
        print(f"  ours (proxy MySQL port)  {port:10.0f} q/s   (client certificate, as pgbench)")
        print(f"  ours (bsh proxy db)      {ours:10.0f} q/s   (its listener in its own process)")
        print(f"  ({r['mysql_audited_queries']} queries audited)")
        spread = _spread(r.get("mysql_rounds", []), "mysql_port_qps", "mysql_direct_qps")
        print(
            f"  ratio ours/direct (mysql) {port / direct:.2f}x port{spread}, "
            f"{ours / direct:.2f}x bsh  (target 0.7x)"
        )
        if "bulk_port_rows_per_s" in r:
            bulk_d, bulk_o = r["bulk_direct_rows_per_s"], r["bulk_port_rows_per_s"]
            spread = _spread(
                r.get("mysql_rounds", []), "bulk_port_rows_per_s", "bulk_direct_rows_per_s"
            )
            bulk_a = r["bulk_audited_rows_per_s"] or bulk_o  # audit off: nothing to wait for
            print(
                f"  bulk insert ({r['bulk_rows']} rows, executemany of {BULK_CHUNK}: "
                f"COM_STMT_BULK_EXECUTE): direct {bulk_d:.0f} rows/s, ours (port) "
                f"{bulk_o:.0f} rows/s: {bulk_o / bulk_d:.2f}x{spread}; until every row is in "
                f"the audit log {bulk_a:.0f} rows/s: {bulk_a / bulk_d:.2f}x; "
                f"{r['bulk_port_cpu_us_per_row']:.1f} us CPU per row"
            )
        if "zip_port_qps" in r:
            zd, zp = r["zip_direct_qps"], r["zip_port_qps"]
            pd, pp = r["zip_direct_plain_qps"], r["zip_port_plain_qps"]
            spread = _spread(r.get("mysql_rounds", []), "zip_port_qps", "zip_direct_qps")
            print(
                f"  compressed answers (~18 KB, {r['zip_queries']} queries, --compress): direct "
                f"{zd:.0f} q/s, ours (port) {zp:.0f} q/s: {zp / zd:.2f}x{spread}; "
                f"uncompressed: direct {pd:.0f}, ours {pp:.0f} q/s ({pp / pd:.2f}x); "
                f"CPU per query (whole process) {r['zip_port_cpu_us_per_query']:.0f} us "
                f"compressed, {r['zip_port_plain_cpu_us_per_query']:.0f} us not"
            )
        print(
            f"  CPU per query (whole process): port {r['mysql_port_cpu_us_per_query']:.0f} us"
            + (
                f" (+ {r['mysql_agent_cpu_us_per_query']:.0f} us in the agent's process)"
                if "mysql_agent_cpu_us_per_query" in r
                else ""
            )
            + ", "
            f"bsh proxy db {r['mysql_ours_cpu_us_per_query']:.0f} us "
            f"(+ {r.get('mysql_bsh_cpu_us_per_query', 0):.0f} us in bsh proxy db's process)"
        )
    if "load_before" in r:
        print(f"load average: {r['load_before']} before, {r['load_after']} after the pgbench runs")
        print(f"(CPU figures are net of the idle process: {r['idle_cpu_percent']:.1f}% of a core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="pgbench -T (the issue's 15)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2 s runs (smoke test)")
    parser.add_argument("--no-audit", action="store_true", help="per-query audit off")
    parser.add_argument(
        "--colocated",
        action="store_true",
        help="the agent in the proxy's process (in-memory tunnel, as bastion start all-in-one)",
    )
    parser.add_argument(
        "--agent-process",
        action="store_true",
        help="the agent in a process of its own (as on the database's host), TLS tunnel",
    )
    parser.add_argument("--no-mysql", action="store_true", help="skip mariadb-slap")
    parser.add_argument(
        "--memory-backend",
        action="store_true",
        help="auth over the in-memory test backend instead of SQLite (bastion start's default)",
    )
    parser.add_argument(
        "--sqlite-writer",
        choices=("process", "thread"),
        default=StorageConfig().writer,
        help="where the SQLite backend's writer runs (storage.writer; bastion start's default)",
    )
    parser.add_argument("--json", default="", help="also write the numbers here")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of every path back to back; the median round is reported (default 3)",
    )
    parser.add_argument("--bsh-listener", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--agent-child", help=argparse.SUPPRESS)
    parser.add_argument("--bulk-child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument(
        "--log-level",
        default="info",
        help="the daemon's log level (info, its default, logs one line per audit event)",
    )
    args = parser.parse_args()
    if args.bulk_child:  # the bulk insert's client (run_mysql)
        bulk_child(*args.bulk_child)
        return
    if args.bsh_listener:  # the child process of run_mysql (as bsh proxy db: its loop)
        tune_runtime()  # as bsh proxy db does
        run_loop(bsh_listener(*args.bsh_listener))
        return
    if args.agent_child:  # --agent-process: the database's agent (as bastion start --roles=db)
        configure_logging("warning", "json", sys.stderr)
        tune_runtime()
        run_loop(run_agent(AgentSpec.from_json(Path(args.agent_child).read_text())))
        return
    if args.quick:
        args.seconds, args.rounds = 2, 1
    configure_logging(args.log_level, "json", sys.stderr)
    tune_runtime()  # as bastion start does
    with tempfile.TemporaryDirectory(prefix="bastion-bench-cfloor-") as build:
        args.c_floor = build_c_floor(Path(build))  # once, for both databases
        result = run_loop(run(args))  # uvloop unless BASTION_EVENT_LOOP=asyncio, as bastion start
        if not args.no_mysql and (shutil.which("mariadb-slap") or shutil.which("mysqlslap")):
            result.update(run_loop(run_mysql(args)))
    result["event_loop"] = event_loop_name()
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
