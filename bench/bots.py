"""Bot certificate renewals per second on auth, and CPU per renewal (issue 18).

What one renewal costs on the auth server: read the bot's user and roles, compute the narrowed
identity, sign an SSH and an X.509 certificate (Ed25519 CAs), and commit the generation bump
with its audit event (``bot.renew``) in one transaction; plus the ``cert.issued`` event. The
peer, same run and same backend: a fresh bot join (token spent, generation set) is the path
it replaces, and the bare issuance (sign + ``cert.issued``, nothing committed) is the floor.

Backends: SQLite (embedded default) always; PostgreSQL too when ``--postgres`` is given and
``initdb``/``pg_ctl`` are installed (the throwaway server of the tests).

``1,000 bots renewing every 10 minutes`` is 1.7 renewals/s: the sustained line prints the
share of one core that rate takes.

Run: ``python bench/bots.py [--quick] [--postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from bastion.auth.bots import BotService
from bastion.auth.renewal import RenewalService
from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend.base import Backend
from bastion.backend.sqlite import SQLiteBackend
from bastion.clock import SystemClock
from bastion.testing import new_public_key
from bastion.types.identity import Identity


async def _measure(
    fn: Callable[[int], Awaitable[object]], count: int, concurrency: int
) -> tuple[float, float]:
    """(calls per second, CPU milliseconds per call) of ``count`` calls over ``concurrency``
    callers (caller ``i`` works on bot ``i``)."""

    async def caller(i: int) -> None:
        for _ in range(count // concurrency):
            await fn(i)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    done = (count // concurrency) * concurrency
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return done / wall, cpu * 1000 / done


async def run(backend: Backend, count: int, bots: int) -> dict[str, tuple[float, float]]:
    clock = SystemClock()
    auth = AuthServer(AuthDeps(backend=backend, clock=clock, cluster="bench", kek=b"\x01" * 32))
    await auth.init()
    service, renewal = BotService(auth), RenewalService(auth)
    _, pub = new_public_key()
    current: dict[int, Identity] = {}
    for i in range(bots):
        _, token = await service.add_bot(f"b{i}", ["access"], ["deploy"], timedelta(days=1), "x")
        certs = await service.join(
            token=token.token, id_token="", bot="", public_key=pub, ttl=timedelta(hours=1),
            remote_addr="127.0.0.1",
        )  # fmt: skip
        current[i] = certs.identity

    async def renew(i: int) -> None:
        certs = await renewal.renew(current[i], pub, timedelta(hours=1), "127.0.0.1")
        current[i] = certs.identity

    async def join(i: int) -> None:
        _, token = await service.add_bot(f"j{time.perf_counter_ns()}-{i}", ["access"], [],
                                         timedelta(days=1), "x")  # fmt: skip
        await service.join(
            token=token.token, id_token="", bot="", public_key=pub, ttl=timedelta(hours=1),
            remote_addr="127.0.0.1",
        )  # fmt: skip

    async def issue(i: int) -> None:
        await auth.issuer.issue_user(current[i], pub, "127.0.0.1")

    results: dict[str, tuple[float, float]] = {}
    for label, fn in (("issuance only (floor)", issue), ("renewal", renew), ("add+join", join)):
        results[f"{label}, {bots} callers"] = await _measure(fn, count, bots)
    return results


def _print(name: str, results: dict[str, tuple[float, float]]) -> None:
    print(f"\n{name}: {'path':<32} {'per s':>8} {'CPU ms':>7} {'vs renewal':>10}")
    renew = next(v for k, v in results.items() if k.startswith("renewal"))
    for label, (rate, cpu) in results.items():
        print(f"{'':{len(name)}}  {label:<32} {rate:>8,.0f} {cpu:>7.2f} {rate / renew[0]:>9.2f}x")
    sustained = 1000 / 600
    print(
        f"{'':{len(name)}}  1,000 bots every 10 min = {sustained:.1f} renewals/s: "
        f"{sustained * renew[1] / 10:.2f}% of one core"
    )


async def _sqlite(count: int, bots: int) -> dict[str, tuple[float, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-bots-"))
    backend = await SQLiteBackend.open(str(tmp / "state.db"), SystemClock())
    try:
        return await run(backend, count, bots)
    finally:
        await backend.close()


async def _postgres(dsn: str, count: int, bots: int) -> dict[str, tuple[float, float]]:
    from bastion.backend.postgres import PostgresBackend

    backend = await PostgresBackend.open(dsn)
    try:
        return await run(backend, count, bots)
    finally:
        await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (about 2 s)")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    count, bots = (40, 4) if args.quick else (800, 16)
    out = {"sqlite": asyncio.run(_sqlite(count, bots))}
    _print("SQLite", out["sqlite"])
    if args.postgres:
        from bastion.testing.peers.postgres import create_database, start_postgres

        with tempfile.TemporaryDirectory(prefix="bench-bots-pg-") as tmp:
            pg = start_postgres(Path(tmp) / "pg")
            try:
                dsn = asyncio.run(create_database(pg))
                out["postgres"] = asyncio.run(_postgres(dsn, count, bots))
            finally:
                pg.stop()
        _print("PostgreSQL", out["postgres"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
