"""Agent audit emits per second: the durable on-disk spool vs the old in-memory queue, same run.

    python bench/agent_events.py [--quick] [--json out.json]

The old ``APIEmitter`` appended each event to a deque (lost on a restart); the spool writes each
event to ``events.jsonl`` and fsyncs before ``emit`` returns, sharing one fsync among concurrent
emits (group commit). Measured: one emitter at a time, 64 concurrent emitters (sessions
starting and ending on a busy node), and one emitter writing batches of 64 (``append_many``:
a proxy in its own process spooling a database session's statements, one fsync per batch).
The spool directory is a temporary directory on the same filesystem as the working directory
(pass ``--dir`` to measure another disk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from bastion.agent.event_spool import EventSpool

CONCURRENCY = 64
BATCH = 64


def sample_event(i: int) -> dict[str, Any]:
    return {
        "type": "session.start",
        "outcome": "success",
        "user": "alice",
        "login": "root",
        "target": "web1",
        "remote_addr": "10.0.0.7:51234",
        "session_id": f"4f1c2d3e-0000-4000-8000-{i:012d}",
        "session_type": "shell",
        "pty": True,
    }


class MemoryQueue:
    """The old APIEmitter's emit: an in-memory deque and a wakeup event."""

    def __init__(self) -> None:
        self.queue: deque[dict[str, Any]] = deque()
        self.wakeup = asyncio.Event()

    async def append(self, event: dict[str, Any]) -> None:
        self.queue.append(event)
        self.wakeup.set()

    async def append_many(self, events: list[dict[str, Any]]) -> None:
        self.queue.extend(events)
        self.wakeup.set()


async def rate(append: Any, total: int, concurrency: int) -> float:
    per = total // concurrency

    async def worker(w: int) -> None:
        for i in range(per):
            await append(sample_event(w * per + i))

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return per * concurrency / (time.perf_counter() - start)


async def batch_rate(append_many: Any, total: int) -> float:
    """One emitter appending ``total`` events in batches of :data:`BATCH`."""
    batches = max(total // BATCH, 1)
    start = time.perf_counter()
    for b in range(batches):
        await append_many([sample_event(b * BATCH + i) for i in range(BATCH)])
    return batches * BATCH / (time.perf_counter() - start)


async def measure(total: int, base: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for label, concurrency in (("sequential", 1), ("concurrent", CONCURRENCY)):
        n = total if concurrency > 1 else max(total // 4, 100)
        memory = await rate(MemoryQueue().append, n, concurrency)
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            spool = EventSpool(Path(tmp) / "spool")
            try:
                durable = await rate(spool.append, n, concurrency)
            finally:
                spool.close()
        out[label] = {"memory_per_s": memory, "spool_per_s": durable, "events": n}
    memory = await batch_rate(MemoryQueue().append_many, total)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        spool = EventSpool(Path(tmp) / "spool")
        try:
            durable = await batch_rate(spool.append_many, total)
        finally:
            spool.close()
    out[f"batches of {BATCH}"] = {"memory_per_s": memory, "spool_per_s": durable, "events": total}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few events (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the spool lives")
    args = parser.parse_args()
    total = 640 if args.quick else 20_000
    result = asyncio.run(measure(total, args.dir))
    print(f"{'emitters':<16}{'events':>8}{'in-memory/s':>14}{'spool/s':>12}{'spool/memory':>14}")
    for label, row in result.items():
        ratio = row["spool_per_s"] / row["memory_per_s"]
        print(
            f"{label:<16}{int(row['events']):>8}{row['memory_per_s']:>14,.0f}"
            f"{row['spool_per_s']:>12,.0f}{ratio:>14.4f}"
        )
    conc = result["concurrent"]["spool_per_s"] / result["sequential"]["spool_per_s"]
    print(f"ratio spool concurrent / sequential (group commit): {conc:.1f}x")
    batched = result[f"batches of {BATCH}"]["spool_per_s"] / result["sequential"]["spool_per_s"]
    print(f"ratio spool batches of {BATCH} / sequential (append_many): {batched:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"agent_events": result}, indent=2))


if __name__ == "__main__":
    main()
