"""What the authentication gate costs per request, measured against peers in the same run.

Every authenticated API request passes ``bastion.auth.gate`` (certificate kind per route, user
exists, user epoch, locks), which reads the user and the locks from the backend. Measured over
real mTLS on loopback, SQLite backend, one keep-alive connection per client:

* ``bare aiohttp``: a plain aiohttp handler behind the same TLS set-up (the peer: the HTTP
  stack's own cost);
* ``public route``: Bastion's ``GET /v1/ping`` (middleware, no identity);
* ``gated route``: Bastion's ``GET /v1/whoami`` with a user certificate (identity parse, the
  gate, RBAC context);
* ``gate alone``: ``Gate.refusal`` called in-process (no HTTP), with 0 and 100 locks stored,
  reading the locks from the backend, and with 100 locks from the process's lock watcher (how
  the daemon runs it).

Run: ``python bench/gate.py`` (about 10 s) or ``--quick`` (smoke test, about 2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

from bastion.api.app import build_app
from bastion.api.tls import server_context
from bastion.auth.gate import Gate
from bastion.auth.server import AuthDeps, AuthServer
from bastion.auth.users import UserService
from bastion.backend.sqlite import SQLiteBackend
from bastion.clock import SystemClock
from bastion.live.registry import LiveRegistry
from bastion.locks.watcher import LockWatcher
from bastion.rbac.checker import RoleSet
from bastion.services.cache import StoreRoleSource
from bastion.testing import new_tls_key
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.identity import Identity
from bastion.types.meta import Metadata


async def _rate(call: Callable[[], Awaitable[object]], seconds: float) -> float:
    for _ in range(20):
        await call()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            await call()
        count += 10
    return count / (time.perf_counter() - start)


async def _serve(app: web.Application, ctx: ssl.SSLContext) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def run(seconds: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    clock = SystemClock()
    backend = await SQLiteBackend.open(str(tmp / "state.db"), clock)
    auth = AuthServer(AuthDeps(backend=backend, clock=clock, cluster="bench", kek=b"\x01" * 32))
    await auth.init()
    users = UserService(auth)
    await users.add_user("alice", ["access"], ["alice"], {}, "bench")
    user = await auth.users.get("alice")
    roles = [await auth.roles.get(r) for r in user.spec.roles]
    identity = auth.issuer.user_identity(
        cluster=auth.cluster,
        user="alice",
        roles=user.spec.roles,
        traits=user.spec.traits,
        role_set=RoleSet.from_roles(roles, user.spec.traits),
        requested_ttl=timedelta(hours=1),
        user_epoch=user.spec.epoch,
    )
    client_key, client_pub = new_tls_key()
    certs = await auth.issuer.issue_user(identity, client_pub, "bench")
    server_key, server_pub = new_tls_key()
    host = Identity(
        cluster="bench",
        user="auth",
        kind="host",
        roles=("auth",),
        host_id="auth",
        expires=clock.now() + timedelta(days=1),
    )
    server = await auth.issuer.issue_host(
        host, server_pub, ["localhost"], ["localhost"], ["127.0.0.1"], timedelta(days=1), "b"
    )
    for name, data in (
        ("server.crt", server.tls_cert.encode()),
        ("server.key", server_key),
        ("client.crt", certs.tls_cert.encode()),
        ("client.key", client_key),
    ):
        (tmp / name).write_bytes(data)
    server_ctx = server_context(tmp / "server.crt", tmp / "server.key", certs.tls_user_ca)
    client_ctx = ssl.create_default_context(cadata=certs.tls_host_ca)
    client_ctx.load_cert_chain(tmp / "client.crt", tmp / "client.key")

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"user": "alice", "kind": "user"})

    bare = web.Application()
    bare.router.add_get("/v1/whoami", hello)
    api = build_app(auth, rate=1e9, burst=1_000_000_000, max_body=1 << 20)
    results: dict[str, float] = {}
    for label, app, path in (
        ("bare aiohttp", bare, "/v1/whoami"),
        ("public route", api, "/v1/ping"),
        ("gated route", api, "/v1/whoami"),
    ):
        runner, port = await _serve(app, server_ctx)
        url = f"https://127.0.0.1:{port}{path}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as s:

            async def get(s: aiohttp.ClientSession = s, url: str = url) -> None:
                async with s.get(url) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()

            results[label] = await _rate(get, seconds)
        await runner.cleanup()
    gate = Gate.for_auth(auth)

    async def admit() -> None:
        assert await gate.refusal(identity, "user") is None

    results["gate alone, 0 locks"] = await _rate(admit, seconds)
    for i in range(100):
        target = LockTarget(user=f"someone-{i}")
        lock = Lock(metadata=Metadata(name=f"l{i}"), spec=LockSpec(target=target))
        await auth.create_resource(lock, "bench", force=False)
    results["gate alone, 100 locks"] = await _rate(admit, seconds)
    # As the daemon runs it: decisions from the process's lock watcher (kept by a backend watch).
    watcher = LockWatcher(
        clock=clock,
        audit=auth.audit,
        registry=LiveRegistry(),
        roles=StoreRoleSource(auth.roles).get_roles,
    )
    await watcher.load(backend)
    auth.use_lock_view(watcher)
    results["gate alone, 100 locks, watcher"] = await _rate(admit, seconds)
    await watcher.close()
    await backend.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (about 2 s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = asyncio.run(run(0.15 if args.quick else 1.5))
    bare = results["bare aiohttp"]
    print(f"{'path':<32} {'req/s':>10} {'vs bare aiohttp':>16}")
    for label, value in results.items():
        ratio = f"{value / bare:.2f}x" if not label.startswith("gate alone") else "-"
        print(f"{label:<32} {value:>10,.0f} {ratio:>16}")
    per_gate = 1e6 / results["gate alone, 0 locks"]
    print(f"\nthe gate costs {per_gate:.0f} us per request (SQLite: one user read, one lock scan)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
