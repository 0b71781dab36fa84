"""Benchmark of the audit export: events per second delivered by the forwarder.

Run with ``python bench/export/run.py [--events N] [--quick] [--json]``. One SQLite audit log of
N events is exported, each time from index 0 with a fresh cursor, by:

* ``forwarder -> HEC (HTTP)``: Splunk HEC bodies to an HTTP receiver in another process
  (``bastion.testing.peers.export.HttpReceiver``, which parses every event);
* ``forwarder -> _bulk (HTTP)``: the Elasticsearch dialect to the same receiver;
* ``forwarder -> JSON-lines file``: our file output (write + fsync per batch, cursor per batch);

next to the floor, ``direct file write``: the same events read from the log page by page with
``read_from`` and their JSON lines written to a file with one fsync at the end: what exporting
costs with no delivery guarantees at all. Batches of 500 events everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bastion.audit.log import AuditLog
from bastion.backend import open_backend
from bastion.clock import SystemClock
from bastion.export.cursor import FileCursor
from bastion.export.file_output import FileOutput
from bastion.export.formats import json_lines
from bastion.export.forwarder import Forwarder, Output
from bastion.export.http_output import HttpOutput, auth_headers
from bastion.logging import configure_logging
from bastion.testing.peers.export import HttpReceiver

BATCH = 500


async def _serve(port_file: Path) -> None:
    receiver = HttpReceiver()
    port = await receiver.start()
    port_file.write_text(str(port))
    await asyncio.Event().wait()


def start_receiver(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = work / "receiver.port"
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text():
            return proc, int(port_file.read_text())
        if proc.poll() is not None:
            raise SystemExit("receiver exited")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("receiver did not start")


async def fill(log: AuditLog, count: int) -> float:
    start = time.perf_counter()
    for chunk in range(0, count, 100):  # concurrent emits share commits
        await asyncio.gather(
            *(
                log.emit(
                    "user.login",
                    outcome="failure" if n % 7 == 0 else "success",
                    user=f"user{n % 100}",
                    remote_addr="10.0.0.5",
                    method="password+otp",
                    n=n,
                )
                for n in range(chunk, min(chunk + 100, count))
            )
        )
    return time.perf_counter() - start


async def run_forwarder(log: AuditLog, output: Output, cursor: Path, count: int) -> float:
    fwd = Forwarder(source=log, output=output, cursor=FileCursor(cursor), batch_size=BATCH)
    start = time.perf_counter()
    delivered = await fwd.run_once()
    elapsed = time.perf_counter() - start
    assert delivered == count, (delivered, count)
    return elapsed


async def direct_file(log: AuditLog, path: Path, count: int) -> float:
    start = time.perf_counter()
    written = 0
    with path.open("wb") as fh:
        index = 0
        while events := await log.read_from(index, BATCH):
            fh.write(json_lines(events))
            index += len(events)
            written += len(events)
        fh.flush()
        os.fsync(fh.fileno())
    elapsed = time.perf_counter() - start
    assert written == count
    return elapsed


async def bench(count: int, work: Path) -> dict[str, Any]:
    backend = await open_backend("sqlite", path=str(work / "backend.sqlite"))
    log = AuditLog(backend, SystemClock(), "bench")
    fill_s = await fill(log, count)
    proc, port = start_receiver(work)
    results: dict[str, float] = {}
    try:
        results["direct file write (floor)"] = await direct_file(log, work / "direct.jsonl", count)
        results["forwarder -> JSON-lines file"] = await run_forwarder(
            log, FileOutput(work / "export.jsonl"), work / "file.cursor", count
        )
        url = f"http://127.0.0.1:{port}"
        hec = HttpOutput(
            f"{url}/services/collector/event",
            "splunk_hec",
            headers=auth_headers("splunk_hec", token="test-token"),
        )
        results["forwarder -> HEC (HTTP)"] = await run_forwarder(
            log, hec, work / "hec.cursor", count
        )
        bulk = HttpOutput(f"{url}/_bulk", "elasticsearch")
        results["forwarder -> _bulk (HTTP)"] = await run_forwarder(
            log, bulk, work / "bulk.cursor", count
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        await backend.close()
    floor = results["direct file write (floor)"]
    return {
        "events": count,
        "batch_size": BATCH,
        "fill_events_per_s": round(count / fill_s),
        "paths": {
            name: {
                "seconds": round(seconds, 3),
                "events_per_s": round(count / seconds),
                "time_vs_floor": round(seconds / floor, 2),
            }
            for name, seconds in results.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="1,000 events (smoke test)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        configure_logging("warning", "text")
        asyncio.run(_serve(Path(args.serve)))
        return
    count = 1000 if args.quick else args.events
    configure_logging("warning", "text")
    with tempfile.TemporaryDirectory(prefix="bastion-export-bench-") as tmp:
        report = asyncio.run(bench(count, Path(tmp)))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{report['events']} events, batches of {report['batch_size']} "
        f"(log filled at {report['fill_events_per_s']} events/s)"
    )
    width = max(len(n) for n in report["paths"])
    for name, row in report["paths"].items():
        print(
            f"  {name:<{width}}  {row['events_per_s']:>8} events/s  {row['seconds']:>7.3f} s"
            f"  x{row['time_vs_floor']} the floor's time"
        )


if __name__ == "__main__":
    main()
