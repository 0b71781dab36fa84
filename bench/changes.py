"""An audited change (the change and its event in one transaction) against its peers, same run.

Every admin change is stored together with its audit event (``AuthServer.audited``, issue 21).
Measured on SQLite (the embedded default), creating roles:

* ``plain write``: ``ResourceStore.create`` alone, no event (the floor: the peer with no audit);
* ``two steps``: the store write, then ``AuditLog.emit`` (how changes were recorded before:
  two commits, and a crash in between left a change without its event);
* ``audited change``: ``AuthServer.create_resource``, one transaction for both.

Each sequentially (one caller) and with 64 concurrent callers (group commit).

Run: ``python bench/changes.py`` (about 10 s) or ``--quick`` (smoke test, about 2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend.sqlite import SQLiteBackend
from bastion.clock import SystemClock
from bastion.types.access import Role
from bastion.types.meta import Metadata

_names = itertools.count()


def _role() -> Role:
    return Role(metadata=Metadata(name=f"r{next(_names)}"))


async def _rate(change: Callable[[], Awaitable[object]], count: int, concurrency: int) -> float:
    """Changes per second of ``count`` calls spread over ``concurrency`` callers."""

    async def caller(n: int) -> None:
        for _ in range(n):
            await change()

    start = time.perf_counter()
    await asyncio.gather(*(caller(count // concurrency) for _ in range(concurrency)))
    return (count // concurrency) * concurrency / (time.perf_counter() - start)


async def run(count: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-changes-"))
    clock = SystemClock()
    backend = await SQLiteBackend.open(str(tmp / "state.db"), clock)
    auth = AuthServer(AuthDeps(backend=backend, clock=clock, cluster="bench", kek=b"\x01" * 32))
    await auth.init()

    async def plain() -> None:
        await auth.roles.create(_role())

    async def two_steps() -> None:
        role = await auth.roles.create(_role())
        await auth.audit.emit("role.create", user="bench", target=f"role/{role.name}")

    async def audited() -> None:
        await auth.create_resource(_role(), "bench", force=False)

    results: dict[str, float] = {}
    for concurrency in (1, 64):
        for label, change in (
            ("plain write", plain),
            ("two steps", two_steps),
            ("audited change", audited),
        ):
            results[f"{label}, {concurrency} caller(s)"] = await _rate(
                change, count * (4 if concurrency > 1 else 1), concurrency
            )
    await backend.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (about 2 s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = asyncio.run(run(64 if args.quick else 1000))
    print(f"{'path (SQLite, role creates)':<34} {'changes/s':>10} {'vs plain write':>15}")
    for label, value in results.items():
        callers = label.rsplit(", ", 1)[1]
        floor = results[f"plain write, {callers}"]
        print(f"{label:<34} {value:>10,.0f} {value / floor:>14.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
