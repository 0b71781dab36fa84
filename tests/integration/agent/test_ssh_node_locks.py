"""Locks on a real SSH node fed like a remote node (issue 6, "Tests").

The node (``SSHNode`` on loopback, asyncssh clients) checks a :class:`LockWatcher` that follows a
:class:`ResourceCache` kept current by the real :func:`watch_forever` from a small TLS
``GET /v1/watch`` server the test controls: it sends the snapshot, pushes lines on demand, ends
or drops the stream, or refuses reconnects (auth unreachable).

* locking a device ends only that device's sessions (certificates of the same user carrying
  different ``device_id``);
* strict mode with the lock state unknown refuses new access (and, once the view is older than
  the bound, ends live strict sessions); best effort allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import asyncssh
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "agent"))
from nodeharness import DEFAULT_ROLES, LOGIN, Client, NodeHarness, RawAccept, make_node, role  # noqa: E402

from bastion.agent.remote import RemoteAuth, watch_forever
from bastion.services.cache import ResourceCache
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.codec import resource_to_dict
from bastion.types.meta import Metadata

ROLES = [
    *DEFAULT_ROLES,
    role("strict", {"logins": [LOGIN], "node_labels": {"*": "*"}}, lock_mode="strict"),
]
WITHIN = 3.0
"""Generous bound for anything the node does on its own (the lock path is sub-second)."""
STALE = dt.timedelta(seconds=31)
"""Just past the default staleness bound (30 s)."""


# ---- a controllable watch server ---------------------------------------------------------------


def _tls_pair(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts over a fresh self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "watch-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "watch.crt", tmp / "watch.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return server, ssl.create_default_context(cafile=str(cert_path))


class WatchServer:
    """``GET /v1/watch`` as auth serves it (NDJSON lines), driven by the test."""

    def __init__(self) -> None:
        self.snapshot: list[dict[str, Any]] = []
        self.down = False
        """Refuse new watches with 503 (auth unreachable behind the proxy)."""
        self.streams = 0
        self._current: asyncio.Queue[dict[str, Any] | str] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.down:
            return web.Response(status=503, text="auth unreachable")
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        queue: asyncio.Queue[dict[str, Any] | str] = asyncio.Queue()
        self._current = queue
        self.streams += 1
        for line in [*self.snapshot, {"type": "init"}]:
            await resp.write(json.dumps(line).encode() + b"\n")
        while True:
            item = await queue.get()
            if item == "end":
                return resp  # a clean end of the stream
            if item == "drop":
                request.transport.abort()  # type: ignore[union-attr]  # the connection dies
                return resp
            await resp.write(json.dumps(item).encode() + b"\n")

    def push(self, line: dict[str, Any]) -> None:
        assert self._current is not None, "no watch is connected"
        self._current.put_nowait(line)

    def stop_stream(self, how: str) -> None:
        """``end`` the current stream cleanly or ``drop`` its connection."""
        assert self._current is not None
        self._current.put_nowait(how)
        self._current = None


@pytest.fixture
async def feed(tmp_path: Path) -> AsyncIterator[tuple[NodeHarness, WatchServer, ResourceCache]]:
    """A lock-checking node whose watcher follows ``watch_forever`` from a WatchServer, with the
    staleness enforcer running as on a remote node (agent/service.py)."""
    server_ctx, client_ctx = _tls_pair(tmp_path)
    watch = WatchServer()
    app = web.Application()
    app.router.add_get("/v1/watch", watch.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]

    keys = tmp_path / "keys"
    keys.mkdir()
    h = await make_node(keys, roles=ROLES, with_locks=True)
    assert h.locks is not None
    cache = ResourceCache()
    h.locks.follow_cache(cache)
    remote = cast(
        RemoteAuth,
        SimpleNamespace(server=f"127.0.0.1:{port}", ssl=client_ctx, fail_over=lambda: None),
    )
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    server = await loop.create_server(lambda: RawAccept(h.node, tasks), "127.0.0.1", 0)
    h.port = server.sockets[0].getsockname()[1]
    background = [
        loop.create_task(watch_forever(remote, ("role", "lock"), cache)),
        loop.create_task(h.locks.watch_staleness(interval=0.05)),
    ]
    try:
        await _until(lambda: h.locks is not None and h.locks.view.healthy, "the first sync")
        yield h, watch, cache
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server.close()
        await h.node.close()
        await server.wait_closed()
        await h.locks.close()
        await runner.cleanup()


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
    assert predicate(), what


# ---- SSH helpers -------------------------------------------------------------------------------


class BannerClient(asyncssh.SSHClient):
    banners: list[str]

    def __init__(self) -> None:
        self.banners = []

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self.banners.append(msg)


async def _refused(h: NodeHarness, client: Client) -> str:
    """Connect expecting a refusal; returns the authentication banner the node sent."""
    made: list[BannerClient] = []

    def factory() -> BannerClient:
        made.append(BannerClient())
        return made[-1]

    with pytest.raises(asyncssh.PermissionDenied):
        conn = await h.connect(client, client_factory=factory)
        conn.close()
    return "".join(made[0].banners) if made else ""


async def _runs(h: NodeHarness, client: Client) -> bool:
    async with await h.connect(client) as conn:
        done = await asyncio.wait_for(conn.run("echo ok", check=True), 10)
        return str(done.stdout).strip() == "ok"


async def _live(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHClientProcess[str]:
    proc = await conn.create_process("echo started; sleep 30; echo done")
    async with asyncio.timeout(10):
        assert (await proc.stdout.readline()).strip() == "started"
    return proc


async def _still_running(proc: asyncssh.SSHClientProcess[str]) -> bool:
    if proc.is_closing():
        return False
    proc.stdin.write("\n")  # the channel still carries data
    await proc.stdin.drain()
    return not proc.is_closing()


def _lock(name: str, message: str, **target: str) -> dict[str, Any]:
    lock = Lock(
        metadata=Metadata(name=name), spec=LockSpec(target=LockTarget(**target), message=message)
    )
    return {"type": "put", "kind": "lock", "resource": resource_to_dict(lock)}


# ---- devices -----------------------------------------------------------------------------------


async def test_device_lock_ends_only_that_devices_sessions(
    feed: tuple[NodeHarness, WatchServer, ResourceCache],
) -> None:
    h, watch, _ = feed
    laptop = await h.client(device_id="dev-laptop")
    phone = await h.client(device_id="dev-phone")
    async with await h.connect(laptop) as conn_a, await h.connect(phone) as conn_b:
        sess_a = await _live(conn_a)
        sess_b = await _live(conn_b)

        watch.push(_lock("lk-dev", "laptop stolen", device="dev-laptop"))
        async with asyncio.timeout(WITHIN):
            await sess_a.wait_closed()
        assert "bastion: session terminated: locked: laptop stolen" in await sess_a.stderr.read()
        assert "done" not in await sess_a.stdout.read()

        assert await _still_running(sess_b)  # same user, other device: untouched
        await _until(
            lambda: (
                [c.identity.device_id for c in h.registry.find(lambda c: True)] == ["dev-phone"]
            ),
            "the laptop's session to leave the registry",
        )
        sess_b.stdin.write_eof()

    terminated = await h.audit.wait_for("session.terminated")
    assert [(e.device_id, e.reason) for e in terminated] == [
        ("dev-laptop", "locked: laptop stolen")
    ]
    # New access: the laptop is refused with the message, the phone still gets in.
    banner = await _refused(h, await h.client(device_id="dev-laptop"))
    assert "access denied: locked: laptop stolen" in banner
    assert await _runs(h, await h.client(device_id="dev-phone"))
    rejected = h.audit.of("session.rejected")
    assert [e.reason for e in rejected] == ["locked: laptop stolen"]


# ---- strict and best-effort modes --------------------------------------------------------------


@pytest.mark.parametrize("how", ["end", "drop"])
async def test_broken_watch_strict_refuses_best_effort_allows(
    feed: tuple[NodeHarness, WatchServer, ResourceCache], how: str
) -> None:
    h, watch, _ = feed
    assert h.locks is not None
    strict = await h.client(roles=("strict",), user="sam")
    relaxed = await h.client(roles=("dev",), user="bea")
    assert await _runs(h, strict)
    async with await h.connect(strict) as conn_s, await h.connect(relaxed) as conn_r:
        live_strict = await _live(conn_s)
        live_relaxed = await _live(conn_r)

        watch.down = True  # auth is unreachable: the stream breaks and reconnects fail
        watch.stop_stream(how)
        await _until(lambda: not h.locks.view.healthy, "the watch to be seen broken")

        banner = await _refused(h, strict)
        assert "access denied: lock state unknown: the lock watch is not connected" in banner
        assert await _runs(h, relaxed)
        rejected = h.audit.of("session.rejected")
        assert [(e.user, e.reason) for e in rejected] == [
            ("sam", "lock state unknown: the lock watch is not connected")
        ]
        # A short outage refuses new strict access but cuts nothing live.
        assert await _still_running(live_strict)
        assert await _still_running(live_relaxed)

        # Unknown for longer than the bound: strict live access ends, best effort stays.
        h.clock.advance(STALE)
        async with asyncio.timeout(WITHIN):
            await live_strict.wait_closed()
        assert "terminated: lock state unknown: the lock watch is not connected" in (
            await live_strict.stderr.read()
        )
        assert await _still_running(live_relaxed)
        live_relaxed.stdin.write_eof()

    # Auth is back: the watch reconnects (with backoff) and strict access works again.
    watch.down = False
    await _until(
        lambda: h.locks is not None and h.locks.view.healthy, "the watch to resync", timeout=20
    )
    assert watch.streams == 2
    assert await _runs(h, strict)


async def test_stale_view_strict_refuses_until_refreshed(
    feed: tuple[NodeHarness, WatchServer, ResourceCache],
) -> None:
    """Connected but silent for longer than the bound (FakeClock): the view is stale."""
    h, watch, _ = feed
    assert h.locks is not None
    strict = await h.client(roles=("strict",), user="sam")
    relaxed = await h.client(roles=("dev",), user="bea")
    assert await _runs(h, strict)
    async with await h.connect(strict) as conn_s, await h.connect(relaxed) as conn_r:
        live_strict = await _live(conn_s)
        live_relaxed = await _live(conn_r)

        h.clock.advance(STALE)  # nothing heard (not even a ping) for longer than the bound
        assert h.locks.view.healthy
        async with asyncio.timeout(WITHIN):
            await live_strict.wait_closed()
        stale = "lock state unknown: not refreshed for more than 30 s"
        assert f"terminated: {stale}" in await live_strict.stderr.read()
        assert await _still_running(live_relaxed)
        live_relaxed.stdin.write_eof()

    assert f"access denied: {stale}" in await _refused(h, strict)
    assert await _runs(h, relaxed)

    watch.push({"type": "ping"})  # the watch's keep-alive refreshes the view
    synced = h.clock.now()
    await _until(lambda: h.locks is not None and h.locks.view.synced_at == synced, "the ping")
    assert await _runs(h, strict)


async def test_strict_mode_still_enforces_known_locks(
    feed: tuple[NodeHarness, WatchServer, ResourceCache],
) -> None:
    """A lock learned before the watch broke keeps refusing in both modes."""
    h, watch, _ = feed
    assert h.locks is not None
    watch.push(_lock("lk-bea", "on leave", user="bea"))
    await _until(lambda: h.locks is not None and h.locks.view.locks, "the lock to arrive")
    watch.down = True
    watch.stop_stream("end")
    await _until(lambda: not h.locks.view.healthy, "the watch to be seen broken")
    relaxed = await h.client(roles=("dev",), user="bea")
    assert "access denied: locked: on leave" in await _refused(h, relaxed)
    assert await _runs(h, await h.client(roles=("dev",), user="carl"))
