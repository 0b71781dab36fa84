"""Bulk audit events: CPU per event from ``emit`` / ``emit_many`` to durable in SQLite.

    python bench/audit_bulk.py                 # 20,000 events per measurement
    python bench/audit_bulk.py --quick         # tiny sizes (the smoke test)
    python bench/audit_bulk.py --events 50000 --batch 32 --json out.json

The events are the log's bulk: ``db.session.query`` (one per SQL statement through the database
proxy, the fields ``bastion.proxy.db_route`` gives them) over the SQLite backend as
``bastion start`` opens it (:func:`bastion.backend.open_backend`: WAL, ``synchronous=NORMAL``, the
periodic expiry/poll loop running), each measurement on a fresh file, with its writer on a worker
thread of this process so that the CPU per event is all in one process (``bastion start`` runs
the writer in a child process, ``storage.writer: process``: the same work, in two processes).
In the same run:

* **ours**, for 1, 8 and 64 concurrent emitters (each awaits its call before the next, as the
  proxies' session writers do): ``AuditLog.emit`` (one event per call; concurrent callers are
  group committed), ``AuditLog.emit_many`` of ``--batch`` events per call (the stored events
  come back), ``AuditLog.append_many`` of ``--batch`` events per call (no events back,
  encoded straight to their canonical bytes) and ``bulk`` (``AuditLog.bulk(...).append``: what
  the db and app routes' session writers send, each emitter one session whose shared
  attributes are encoded once, each event only its query, parameters and protocol).
  Every event is durable when its await returns. Then one
  checkpoint folds the new events into the Merkle tree and signs (``bastion start`` runs one
  every 10 s): reported separately, per event.
* **floor**: ``sqlite3`` directly on a file with the same pragmas, the same canonical bytes, one
  ``INSERT`` per event, one ``BEGIN IMMEDIATE ... COMMIT`` per call-sized batch (1 event for
  ``emit``, ``--batch`` for ``emit_many``), on the calling thread.

With ``--postgres`` the same run also measures the ``bulk`` writer over the PostgreSQL backend
(the HA deployment's, on a server started for the run; ``bench/ha.py`` has the rest of HA):

* **ours**: ``bulk`` for 1, 8 and 64 emitters, each measurement on a fresh database; the batches
  go through ``PostgresBackend.create_many`` (two statements per batch);
* **ours via commit**: the same writer with the backend's ``create_many`` hidden, so the
  batches take ``commit`` (three round trips per event: what every batch took before);
* **floor**: asyncpg ``executemany`` of one ``INSERT`` per event of the same bytes into a plain
  ``(key, value)`` table, one transaction per batch.

CPU is this process's (the server's is not counted), so the wall rate is the figure to compare.

Numbers: events/s (wall) and CPU microseconds per event (this process, every thread, including
the backend's worker thread and its poll loop; the machine's load average is printed beside
them), the best of ``--rounds`` rounds (other jobs on a shared machine only ever add CPU), and
the ratio ours / floor of CPU per event. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from bastion.audit.canonical import encode
from bastion.audit.checkpointer import Checkpointer
from bastion.audit.log import AuditLog, event_key
from bastion.audit.signer import load_or_create_signer
from bastion.backend import Backend, open_backend
from bastion.clock import SystemClock
from bastion.logging import configure_logging
from bastion.runtime import tune_runtime

CONCURRENCY = (1, 8, 64)
KEK = bytes(range(32))
EVENT = "db.session.query"


def query_fields(i: int) -> dict[str, object]:
    """A ``pgbench -S`` statement as the db route audits it."""
    return {
        "user": f"alice{i % 8}",
        "query": "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        "parameters": [str(1 + i * 7919 % 100_000)],
        "protocol": "extended",
        "db_service": "pg",
        "db_user": "bench",
        "db_name": "bench",
    }


OWN_FIELDS = ("query", "parameters", "protocol")
"""What differs between a session's statements (the rest is the bulk writer's shared part)."""


def own_fields(i: int) -> dict[str, object]:
    fields = query_fields(i)
    return {f: fields[f] for f in OWN_FIELDS}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


async def measure(work: Callable[[], Awaitable[None]], n: int) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    await work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"events_per_s": n / wall, "cpu_us_per_event": cpu * 1e6 / n}


async def bench_ours(
    tmp: Path,
    n: int,
    rounds: int,
    emitters: int,
    batch: int,
    name: str,
    store: Callable[[str], Awaitable[Backend]] | None = None,
) -> dict[str, Any]:
    """``emit`` (batch 1), ``emit_many``, ``append_many`` or ``bulk`` (``name``) from ``emitters``
    concurrent tasks, ``rounds`` times ``n`` events on one log; the best round's numbers
    (least disturbed by other jobs on the machine). ``store`` opens the backend (a fresh
    SQLite file by default)."""
    clock = SystemClock()
    label = f"{name}-{emitters}"
    if store is None:
        backend = await open_backend("sqlite", path=str(tmp / f"{label}.sqlite"))
    else:
        backend = await store(label)
    log = AuditLog(backend, clock, "bench")
    best: dict[str, Any] = {}
    try:
        signer = await load_or_create_signer(backend, KEK, "bench", clock)
        checkpointer = Checkpointer(log, signer, clock)
        await log.emit("session.start", user="warmup")  # the head lookup, once
        for _ in range(rounds):
            calls = iter(range(0, n, batch))

            async def emitter(k: int, calls: Iterator[int] = calls) -> None:
                # bulk: one session's writer (the db route's), its shared attributes once
                shared: dict[str, Any] = {
                    f: v for f, v in query_fields(k).items() if f not in OWN_FIELDS
                }
                writer = log.bulk(EVENT, **shared) if name == "bulk" else None
                for start in calls:
                    if batch == 1:
                        await log.emit(EVENT, **query_fields(start))  # type: ignore[arg-type]
                        continue
                    stop = min(n, start + batch)
                    if writer is not None:
                        await writer.append([own_fields(i) for i in range(start, stop)])
                        continue
                    specs = [(EVENT, "success", query_fields(i)) for i in range(start, stop)]
                    if name == "append_many":
                        await log.append_many(specs)
                    else:
                        await log.emit_many(specs)

            async def run() -> None:
                await asyncio.gather(*(emitter(k) for k in range(emitters)))

            out = await measure(run, n)
            checkpoint = await measure(lambda: _discard(checkpointer.checkpoint()), n)
            out["checkpoint_cpu_us_per_event"] = checkpoint["cpu_us_per_event"]
            if not best or out["cpu_us_per_event"] < best["cpu_us_per_event"]:
                best = out
        size = await log.size()
        last = (await log.read_from(size - 1, 1))[0]
        if size != 1 + rounds * n or last.type != EVENT:
            raise SystemExit(f"the log does not hold {rounds} x {n} events after the run")
    finally:
        await backend.close()
    return best


async def _discard(work: Awaitable[object]) -> None:
    await work


def bench_floor(tmp: Path, n: int, rounds: int, batch: int) -> dict[str, float]:
    """One INSERT per event of the same bytes, ``batch`` events per transaction, sqlite3 on
    this thread (no executor, no index bookkeeping): what storing the bytes costs at least.
    The best of ``rounds``."""
    values = floor_values(n)
    db = sqlite3.connect(str(tmp / f"floor-{batch}.sqlite"), isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    best: dict[str, float] = {}
    for r in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, n, batch):
            db.execute("BEGIN IMMEDIATE")
            for i in range(start, min(n, start + batch)):
                key = event_key(r * n + i)
                db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", (key, values[i]))
            db.execute("COMMIT")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out = {"events_per_s": n / wall, "cpu_us_per_event": cpu * 1e6 / n}
        if not best or out["cpu_us_per_event"] < best["cpu_us_per_event"]:
            best = out
    db.close()
    return best


def floor_values(n: int) -> list[bytes]:
    """The canonical bytes of ``n`` statement events, what the floors store."""
    clock = SystemClock()
    values = []
    for i in range(n):
        specs = query_fields(i)
        top = {k: specs.pop(k) for k in ("user",)}
        values.append(_canonical(clock, i, top, specs))
    return values


def _canonical(
    clock: SystemClock, i: int, top: dict[str, object], extra: dict[str, object]
) -> bytes:
    from bastion.types.audit import AuditEvent

    event = AuditEvent(
        type=EVENT,
        code="T0000I",
        time=clock.now(),
        cluster="bench",
        fields=extra,
        id=f"{i:020d}-00000000",
        index=i,
        **top,
    )
    return encode(event)


async def bench_postgres(tmp: Path, n: int, rounds: int, batch: int) -> dict[str, Any]:
    """The ``--postgres`` rows (see the module docstring)."""
    import asyncpg

    from bastion.testing.peers.postgres import create_database, start_postgres

    server = start_postgres(tmp / "pg")
    try:

        async def fresh(_label: str) -> Backend:
            return await open_backend("postgres", dsn=await create_database(server))

        async def via_commit(label: str) -> Backend:
            backend = await fresh(label)
            backend.create_many = None  # type: ignore[attr-defined]  # base.create_many: commit
            return backend

        out: dict[str, Any] = {"bulk": {}}
        for emitters in CONCURRENCY:
            out["bulk"][str(emitters)] = await bench_ours(
                tmp, n, rounds, emitters, batch, "bulk", fresh
            )
        slow = max(batch, n // 8)  # three round trips an event: fewer events
        out["bulk_via_commit"] = await bench_ours(tmp, slow, 1, 8, batch, "bulk", via_commit)
        out["bulk_via_commit"]["events"] = slow
        values = floor_values(n)
        conn = await asyncpg.connect(await create_database(server))
        try:
            await conn.execute("CREATE TABLE kv (key text PRIMARY KEY, value bytea NOT NULL)")
            best: dict[str, float] = {}
            for r in range(rounds):

                async def floor(r: int = r) -> None:
                    for start in range(0, n, batch):
                        rows = [
                            (event_key(r * n + i), values[i])
                            for i in range(start, min(n, start + batch))
                        ]
                        async with conn.transaction():
                            await conn.executemany("INSERT INTO kv VALUES ($1, $2)", rows)

                one = await measure(floor, n)
                if not best or one["events_per_s"] > best["events_per_s"]:
                    best = one
            out["floor"] = best
        finally:
            await conn.close()
        return out
    finally:
        server.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "events": args.events,
        "batch": args.batch,
        "rounds": args.rounds,
        "load_before": load(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-audit-bulk-") as d:
        tmp = Path(d)
        floors = {b: bench_floor(tmp, args.events, args.rounds, b) for b in (1, args.batch)}
        out["floor"] = {
            "emit": floors[1],
            "emit_many": floors[args.batch],
            "append_many": floors[args.batch],
            "bulk": floors[args.batch],
        }
        for name, batch in (
            ("emit", 1),
            ("emit_many", args.batch),
            ("append_many", args.batch),
            ("bulk", args.batch),
        ):
            rows = {}
            for emitters in CONCURRENCY:
                row = await bench_ours(tmp, args.events, args.rounds, emitters, batch, name)
                floor = floors[batch]["cpu_us_per_event"]
                row["ratio_cpu_vs_floor"] = row["cpu_us_per_event"] / floor
                rows[str(emitters)] = row
            out[name] = rows
        if args.postgres:
            out["postgres"] = await bench_postgres(tmp, args.events, args.rounds, args.batch)
    out["load_after"] = load()
    return out


def report(out: dict[str, Any]) -> None:
    print(
        f"bulk audit events ({EVENT}) on SQLite, best of {out['rounds']} rounds of "
        f"{out['events']} events, emit_many batch {out['batch']}; load average "
        f"{out['load_before']} -> "
        f"{out['load_after']}"
    )
    for name in ("emit", "emit_many", "append_many", "bulk"):
        floor = out["floor"][name]
        if name in ("emit", "emit_many"):  # append_many and bulk: the same floor as emit_many
            print(
                f"  floor  sqlite3 INSERT, {1 if name == 'emit' else out['batch']:3d}/tx  "
                f"{floor['events_per_s']:9.0f} ev/s  {floor['cpu_us_per_event']:7.1f} us CPU/ev"
            )
        for emitters, row in out[name].items():
            print(
                f"  {name:11s} {int(emitters):2d} emitters      {row['events_per_s']:9.0f} ev/s  "
                f"{row['cpu_us_per_event']:7.1f} us CPU/ev  "
                f"(+ checkpoint {row['checkpoint_cpu_us_per_event']:5.1f})  "
                f"ratio ours/floor CPU {row['ratio_cpu_vs_floor']:5.1f}x"
            )
    pg = out.get("postgres")
    if pg is not None:
        floor = pg["floor"]["events_per_s"]
        print(f"bulk over PostgreSQL (the HA backend), batch {out['batch']}, rate ours/floor:")
        print(f"  floor  asyncpg executemany INSERT  {floor:9.0f} ev/s")
        for emitters, row in pg["bulk"].items():
            print(
                f"  bulk        {int(emitters):2d} emitters      {row['events_per_s']:9.0f} ev/s  "
                f"{row['cpu_us_per_event']:7.1f} us CPU/ev  ratio ours/floor rate "
                f"{row['events_per_s'] / floor:5.2f}x"
            )
        row = pg["bulk_via_commit"]
        print(
            f"  bulk via commit  8 emitters {row['events_per_s']:9.0f} ev/s  "
            f"{row['cpu_us_per_event']:7.1f} us CPU/ev  ({row['events']} events; what every "
            "batch took before create_many)"
        )


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--events", type=int, default=20_000, help="events per measurement")
    p.add_argument("--batch", type=int, default=16, help="events per emit_many call")
    p.add_argument("--rounds", type=int, default=3, help="rounds per row (the best is shown)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument(
        "--postgres", action="store_true", help="also the bulk writer over PostgreSQL (HA)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.events, args.rounds = 512, 1
    if args.events < 1 or args.batch < 2 or args.rounds < 1:
        p.error("--events and --rounds must be positive and --batch at least 2")
    return args


def run(argv: list[str]) -> None:
    args = parse(argv)
    configure_logging("info", "json", sys.stderr)  # as bastion start does
    tune_runtime()
    out = asyncio.run(main(args))
    report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    run(sys.argv[1:])
