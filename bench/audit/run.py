"""Audit log benchmark: appends per second with hashing on SQLite, and verify over 1M events.

    python bench/audit/run.py                      # 20,000 appends, verify over 1,000,000
    python bench/audit/run.py --quick              # tiny sizes (the smoke test)
    python bench/audit/run.py --events 50000 --verify-events 200000 --json out.json

Each measurement uses a fresh SQLite file (WAL, the daemon's settings) in a temporary directory.

Append, in the same run:
  * plain:      ``backend.create`` of the same canonical event bytes under ``bench/plain/<n>``
                (no index, no tree), one at a time and from 64 concurrent tasks;
  * ours:       ``AuditLog.emit`` (gapless index by conditional create; concurrent emitters are
                group-committed into one transaction) one at a time, from 64 concurrent tasks,
                and ``emit_many`` batches; then the checkpoint that hashes every new event
                into the Merkle tree, writes the leaf records and signs a C2SP checkpoint.
  "with hashing" = events / (append time + checkpoint time).

Verify: N events are bulk-inserted through the backend (``emit_many`` -> ``create_batch``),
checkpointed once, then ``verify_log`` recomputes the tree over all of them (timed alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bastion.audit.canonical import encode
from bastion.audit.checkpointer import Checkpointer
from bastion.audit.log import AuditLog
from bastion.audit.signer import load_or_create_signer
from bastion.audit.verify import verify_log
from bastion.backend.base import Item
from bastion.backend.sqlite import SQLiteBackend
from bastion.clock import SystemClock
from bastion.types.audit import AuditEvent

CONCURRENCY = 64
KEK = bytes(range(32))


def fields(i: int) -> dict[str, object]:
    """A realistic event: an SSH exec with a command line."""
    return {
        "user": f"user{i % 50}",
        "login": "root",
        "target": f"node-{i % 20}",
        "remote_addr": "10.1.2.3",
        "session_id": f"s{i // 10}",
        "command": f"systemctl restart app-{i % 7}",
        "exit_code": 0,
    }


async def timed(work: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await work()
    return time.perf_counter() - start


async def open_db(tmp: Path, name: str) -> SQLiteBackend:
    return await SQLiteBackend.open(str(tmp / f"{name}.sqlite"))


async def concurrently(n: int, one: Callable[[int], Awaitable[object]]) -> None:
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def bench_plain(tmp: Path, n: int, concurrent: bool) -> float:
    backend = await open_db(tmp, f"plain-{concurrent}")
    clock = SystemClock()
    try:

        async def one(i: int) -> None:
            f = fields(i)
            top = {k: f.pop(k) for k in ("user", "login", "target", "remote_addr", "session_id")}
            event = AuditEvent(
                type="exec",
                code="T5002I",
                time=clock.now(),
                cluster="bench",
                fields=f,
                id=f"{i:020d}-00000000",
                index=i,
                **top,  # type: ignore[arg-type]
            )
            await backend.create(Item(f"bench/plain/{i:020d}", encode(event)))

        async def seq() -> None:
            for i in range(n):
                await one(i)

        elapsed = await timed((lambda: concurrently(n, one)) if concurrent else seq)
    finally:
        await backend.close()
    return n / elapsed


async def bench_ours(tmp: Path, n: int, mode: str) -> dict[str, float]:
    backend = await open_db(tmp, f"ours-{mode}")
    clock = SystemClock()
    log = AuditLog(backend, clock, "bench")
    try:
        signer = await load_or_create_signer(backend, KEK, "bench", clock)
        checkpointer = Checkpointer(log, signer, clock)

        async def one(i: int) -> None:
            await log.emit("exec", **fields(i))

        async def seq() -> None:
            for i in range(n):
                await one(i)

        async def batched() -> None:
            for start in range(0, n, 500):
                specs = [("exec", "success", fields(i)) for i in range(start, min(n, start + 500))]
                await log.emit_many(specs)

        work = {"sequential": seq, "concurrent": lambda: concurrently(n, one), "batch": batched}
        append = await timed(work[mode])
        checkpoint = await timed(lambda: checkpointer.checkpoint())  # type: ignore[arg-type,return-value]
        assert (await log.read_from(n - 1, 1))[0].index == n - 1
    finally:
        await backend.close()
    return {
        "append_per_s": n / append,
        "checkpoint_per_s": n / checkpoint,
        "with_hashing_per_s": n / (append + checkpoint),
    }


async def bench_verify(tmp: Path, n: int) -> dict[str, float]:
    backend = await open_db(tmp, "verify")
    clock = SystemClock()
    log = AuditLog(backend, clock, "bench")
    try:
        signer = await load_or_create_signer(backend, KEK, "bench", clock)
        checkpointer = Checkpointer(log, signer, clock)
        batch = 5000

        async def generate() -> None:
            for start in range(0, n, batch):
                specs = [
                    ("exec", "success", fields(i)) for i in range(start, min(n, start + batch))
                ]
                await log.emit_many(specs)

        gen = await timed(generate)
        cp = await timed(lambda: checkpointer.checkpoint())  # type: ignore[arg-type,return-value]
        result: dict[str, Any] = {}

        async def run_verify() -> None:
            result["report"] = await verify_log(log, signer.verifier())

        verify = await timed(run_verify)
        report = result["report"]
        if not report.ok or report.verified != n:
            raise SystemExit(f"verify failed on an untouched log: {report.to_dict()}")
    finally:
        await backend.close()
    return {"events": n, "generate_s": gen, "checkpoint_s": cp, "verify_s": verify}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"events": args.events}
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as d:
        tmp = Path(d)
        plain_seq = await bench_plain(tmp, args.events, concurrent=False)
        plain_conc = await bench_plain(tmp, args.events, concurrent=True)
        ours = {
            mode: await bench_ours(tmp, args.events, mode)
            for mode in ("sequential", "concurrent", "batch")
        }
        out["plain_create_per_s"] = {"sequential": plain_seq, "concurrent": plain_conc}
        out["audit_log"] = ours
        out["ratio_vs_plain"] = {
            "sequential": ours["sequential"]["with_hashing_per_s"] / plain_seq,
            "concurrent": ours["concurrent"]["with_hashing_per_s"] / plain_conc,
        }
        out["verify"] = await bench_verify(tmp, args.verify_events)
    return out


def report(out: dict[str, Any]) -> None:
    p = out["plain_create_per_s"]
    print(f"appends on SQLite, {out['events']} events each (events/s):")
    print(
        f"  plain backend.create   sequential {p['sequential']:9.0f}   {CONCURRENCY} concurrent "
        f"{p['concurrent']:9.0f}"
    )
    for mode, r in out["audit_log"].items():
        print(
            f"  audit log {mode:<12} append {r['append_per_s']:9.0f}   checkpoint (hash+sign) "
            f"{r['checkpoint_per_s']:9.0f}   with hashing {r['with_hashing_per_s']:9.0f}"
        )
    rs = out["ratio_vs_plain"]
    print(
        f"  ratio audit log with hashing / plain create: sequential {rs['sequential']:.2f}x, "
        f"concurrent {rs['concurrent']:.2f}x"
    )
    v = out["verify"]
    print(
        f"verify over {v['events']} events: {v['verify_s']:.1f} s (generate "
        f"{v['generate_s']:.1f} s, checkpoint {v['checkpoint_s']:.1f} s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--verify-events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--json", default="", help="also write the results here")
    ns = parser.parse_args()
    if ns.quick:
        ns.events, ns.verify_events = 300, 2_000
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results = asyncio.run(main(ns))
    report(results)
    if ns.json:
        Path(ns.json).write_text(json.dumps(results, indent=2))
    sys.exit(0)
