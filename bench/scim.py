"""SCIM benchmark (issue 20): provisioning throughput and deactivation-to-cut latency.

Run with ``python bench/scim.py`` (or ``--quick``). In one process, over loopback HTTP:

* the auth API app (``build_app``: the same middleware, gate, token check, audit) on the
  default SQLite backend (the MemoryBackend sweeps every key on each call: not a server's
  cost), served by aiohttp on 127.0.0.1; ``--users`` SCIM creates, with creates/s printed per
  100 users as the connector grows (flat: the userName index, no scan), ``userName eq``
  lookups, then as many PATCHes (a ``displayName`` replace), ``--concurrency`` at a time, with
  the connector's bearer token. The peer in the same run is the app's own ``/v1/ping``
  (public, no audit): the ratio says what SCIM's token check, validation and audited commit
  cost over a bare request;
* deactivation to cut: a LockWatcher (the proxy's and node's enforcement) over the same backend
  holds one live node-side session per provisioned user (node sessions end first; proxy-side
  connections follow after the watcher's 0.5 s agent-first grace); each round PATCHes
  ``active: false`` for the
  next user and times until that user's connection is terminated (p50/p99). The end-to-end
  path with a real SSH session is tests/integration/test_scim.py (about 0.1 s there).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bastion.api.app import build_app
from bastion.api.ratelimit import RateLimiter
from bastion.api.scim import SCIM
from bastion.auth.scim import ScimTokens
from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend.sqlite import SQLiteBackend
from bastion.clock import SystemClock
from bastion.live.registry import LiveConnection, LiveRegistry
from bastion.locks.watcher import LockWatcher
from bastion.logging import configure_logging
from bastion.tasks import TaskSet
from bastion.types.connectors import OIDCConnector
from bastion.types.identity import Identity

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
STEP = 100


async def _timed(session: aiohttp.ClientSession, jobs: list[tuple[str, str, Any]], conc: int,
                 headers: dict[str, str]) -> tuple[float, list[Any]]:  # fmt: skip
    sem = asyncio.Semaphore(conc)
    out: list[Any] = [None] * len(jobs)

    async def one(i: int, method: str, url: str, body: Any) -> None:
        async with sem, session.request(method, url, json=body, headers=headers) as resp:
            assert resp.status < 300, (resp.status, await resp.text())
            out[i] = await resp.json(content_type=None)

    start = time.perf_counter()
    await asyncio.gather(*(one(i, *job) for i, job in enumerate(jobs)))
    return time.perf_counter() - start, out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(users: int, rounds: int, conc: int) -> None:
    configure_logging("warning")
    tmp = tempfile.TemporaryDirectory(prefix="bench-scim-")
    backend = await SQLiteBackend.open(str(Path(tmp.name) / "state.db"), SystemClock())
    auth = AuthServer(AuthDeps(backend=backend, clock=SystemClock(), cluster="bench",
                               kek=b"\x01" * 32))  # fmt: skip
    await auth.init()
    connector = OIDCConnector.model_validate({"metadata": {"name": "okta"}, "spec": {
        "issuer_url": "https://idp.example.com", "client_id": "x",
        "claims_to_roles": [{"claim": "groups", "value": "eng", "roles": ["access"]}],
    }})  # fmt: skip
    await auth.create_resource(connector, "admin", force=False)
    token = await ScimTokens(auth).create("okta", "bench")
    app = build_app(auth, rate=1e9, burst=10**9, max_body=1 << 20)
    app[SCIM].limiter = RateLimiter(rate=1e9, burst=10**9)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    registry = LiveRegistry()
    watcher = LockWatcher(clock=auth.clock, audit=auth.audit, registry=registry)
    tasks = TaskSet()
    tasks.spawn(watcher.run_backend(auth.deps.backend), "lock-watch")
    try:
        async with aiohttp.ClientSession() as session:
            pings = [("GET", f"{base}/v1/ping", None)] * users
            ping_s, _ = await _timed(session, pings, conc, {})
            docs, rates = [], []
            create_s = 0.0
            for lo in range(0, users, STEP):  # creates/s per 100 users: flat (userName index)
                creates = [("POST", f"{base}/scim/v2/Users", {"userName": f"user{i}"})
                           for i in range(lo, min(users, lo + STEP))]  # fmt: skip
                took, made = await _timed(session, creates, conc, headers)
                create_s += took
                docs += made
                rates.append((lo + len(made), len(made) / took))
            shown = [r for r in rates if r[0] in (STEP, 500, 1000, users)] or rates
            first = statistics.median(r for _, r in rates[:3])
            last = statistics.median(r for _, r in rates[-3:])
            print("SCIM creates/s as the connector grows: " + ", ".join(
                f"{rps:.0f}/s at {n} users" for n, rps in shown)
                + f"; median of the first 3 x {STEP}: {first:.0f}/s, of the last 3: {last:.0f}/s"
                f" (last/first {last / first:.2f}; 1.0 = flat)")  # fmt: skip
            lookups = [("GET", f"{base}/scim/v2/Users?filter=userName%20eq%20%22user{i}%22", None)
                       for i in range(0, users, max(1, users // STEP))]  # fmt: skip
            look_s, _ = await _timed(session, lookups, conc, headers)
            print(f"SCIM userName eq lookup at {users} users: {len(lookups) / look_s:.0f} req/s")
            patch = {"schemas": [PATCH], "Operations": [
                {"op": "replace", "path": "displayName", "value": "Bench"}]}  # fmt: skip
            patches = [("PATCH", f"{base}/scim/v2/Users/{d['id']}", patch) for d in docs]
            patch_s, _ = await _timed(session, patches, conc, headers)
            ping_rps, create_rps, patch_rps = users / ping_s, users / create_s, users / patch_s
            print(f"SCIM create: {create_rps:8.0f} req/s   PATCH: {patch_rps:8.0f} req/s   "
                  f"peer /v1/ping: {ping_rps:8.0f} req/s   "
                  f"(create/ping {create_rps / ping_rps:.2f}, "
                  f"patch/ping {patch_rps / ping_rps:.2f})")  # fmt: skip

            cut: dict[str, asyncio.Event] = {}
            for doc in docs[:rounds]:
                user = f"okta:{doc['userName']}"
                cut[user] = done = asyncio.Event()

                async def terminate(reason: str, done: asyncio.Event = done) -> None:
                    done.set()

                identity = Identity(
                    cluster=auth.cluster, user=user, roles=("access",),
                    traits={"sso_connector": ("okta",)},
                    expires=auth.clock.now() + timedelta(hours=1),
                )  # fmt: skip
                registry.add(LiveConnection("ssh_session", identity, "node1", terminate=terminate))
            await asyncio.sleep(0.5)  # the watcher's initial load
            off = {
                "schemas": [PATCH],
                "Operations": [{"op": "replace", "value": {"active": False}}],
            }
            latencies = []
            for doc in docs[:rounds]:
                start = time.perf_counter()
                url = f"{base}/scim/v2/Users/{doc['id']}"
                async with session.patch(url, json=off, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                await asyncio.wait_for(cut[f"okta:{doc['userName']}"].wait(), 10)
                latencies.append(time.perf_counter() - start)
            print(f"SCIM deactivate -> live connection terminated over {len(latencies)} users: "
                  f"p50 {statistics.median(latencies) * 1000:.1f} ms, "
                  f"p99 {_pct(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms "
                  "(target p99 <= 1000 ms)")  # fmt: skip
    finally:
        await tasks.cancel_all()
        await runner.cleanup()
        await backend.close()
        tmp.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.users, args.rounds = 200, 10
    asyncio.run(main(args.users, args.rounds, args.concurrency))
