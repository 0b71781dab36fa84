"""Issue 11: every authenticated route refuses locked, deleted and reset users, host certificates
on user routes and user certificates on agent routes, and audits each refusal.

The routes come from the app's router (so a route added tomorrow is covered), served over real
mTLS on loopback with real certificates from the cluster's CAs.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bastion.api.app import build_app
from bastion.api.audiences import audience_of
from bastion.api.tls import server_context
from bastion.audit.log import AuditQuery
from bastion.clock import SystemClock
from bastion.rbac.checker import RoleSet
from bastion.recording.store import LocalRecordingStore
from bastion.testing import AuthFixture, make_auth, new_tls_key
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.codec import resource_to_dict
from bastion.types.identity import Identity
from bastion.types.meta import Metadata
from bastion.web.sessions import SESSION_COOKIE, WebSessions

PARAMS = {"kind": "role", "name": "x", "session_id": "s1", "id": "x", "connector": "x"}


@dataclass
class Cluster:
    fx: AuthFixture
    url: str
    tmp: Path
    host_ca: str
    routes: list[tuple[str, str]]

    def client_ctx(self, name: str, cert: str, key: bytes) -> ssl.SSLContext:
        (self.tmp / f"{name}.crt").write_text(cert)
        (self.tmp / f"{name}.key").write_bytes(key)
        ctx = ssl.create_default_context(cadata=self.host_ca)
        ctx.load_cert_chain(self.tmp / f"{name}.crt", self.tmp / f"{name}.key")
        return ctx

    async def user_ctx(self, name: str) -> tuple[ssl.SSLContext, Identity]:
        """A login certificate of ``name`` as it stands now (its roles, traits and epoch)."""
        user = await self.fx.auth.users.get(name)
        roles = [await self.fx.auth.roles.get(r) for r in user.spec.roles]
        identity = self.fx.auth.issuer.user_identity(
            cluster=self.fx.auth.cluster,
            user=name,
            roles=user.spec.roles,
            traits=user.spec.traits,
            role_set=RoleSet.from_roles(roles, user.spec.traits),
            requested_ttl=timedelta(hours=1),
            user_epoch=user.spec.epoch,
        )
        key, pub = new_tls_key()
        certs = await self.fx.auth.issuer.issue_user(identity, pub, "test")
        return self.client_ctx(name, certs.tls_cert, key), identity

    async def host_ctx(self, name: str) -> ssl.SSLContext:
        token = await self.fx.auth.add_token(["node"], timedelta(minutes=5), {}, "admin")
        key, pub = new_tls_key()
        certs = await self.fx.auth.join(token.token, name, "node", pub, [], [], "test")
        return self.client_ctx(f"host-{name}", certs.tls_cert, key)

    async def call(
        self, ctx: ssl.SSLContext, method: str, path: str, **kw: object
    ) -> tuple[int, dict[str, object]]:
        conn = aiohttp.TCPConnector(ssl=ctx)
        async with (
            aiohttp.ClientSession(connector=conn) as session,
            session.request(method, self.url + path, **kw) as resp,  # type: ignore[arg-type]
        ):
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = {}
            return resp.status, body if isinstance(body, dict) else {}


@pytest.fixture
async def c(tmp_path: Path) -> AsyncIterator[Cluster]:
    fx = await make_auth(SystemClock(), recordings=LocalRecordingStore(tmp_path / "recs"))
    auth = fx.auth
    key, pub = new_tls_key()
    server_id = Identity(
        cluster=auth.cluster,
        user="auth",
        kind="host",
        roles=("auth",),
        host_id="auth",
        expires=auth.clock.now() + timedelta(days=1),
    )
    certs = await auth.issuer.issue_host(
        server_id, pub, ["auth", "localhost"], ["localhost"], ["127.0.0.1"], timedelta(days=1), "t"
    )
    (tmp_path / "auth.crt").write_text(certs.tls_cert)
    (tmp_path / "auth.key").write_bytes(key)
    tls_user = await auth.issuer.ca("tls_user")
    tls_host = await auth.issuer.ca("tls_host")
    cas = "".join(k.cert_pem for ca in (tls_user, tls_host) for k in ca.spec.trusted_keys())
    app = build_app(auth, rate=1000.0, burst=1000, max_body=1 << 20)
    routes = sorted(
        {
            (r.method, r.resource.canonical)
            for r in app.router.routes()
            if r.resource is not None and r.method != "HEAD"
        }
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        0,
        ssl_context=server_context(tmp_path / "auth.crt", tmp_path / "auth.key", cas),
    )
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    host_ca = "".join(k.cert_pem for k in tls_host.spec.trusted_keys())
    try:
        yield Cluster(fx, f"https://127.0.0.1:{port}", tmp_path, host_ca, routes)
    finally:
        await runner.cleanup()


def _path(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "x"), template)


async def _refusals(c: Cluster) -> int:
    return len(await c.fx.auth.audit.search(AuditQuery(types=("access.denied",), limit=0)))


async def _refused_everywhere(c: Cluster, ctx: ssl.SSLContext, audiences: set[str]) -> int:
    """Call every route for ``audiences``; each must be refused (401/403) and audited once."""
    called = 0
    for method, template in c.routes:
        if audience_of(method, template) not in audiences:
            continue
        before = await _refusals(c)
        status, body = await c.call(ctx, method, _path(template), json={})
        assert status in (401, 403), (method, template, status, body)
        assert await _refusals(c) == before + 1, (method, template)
        called += 1
    return called


async def test_locked_deleted_and_reset_users_are_refused_on_every_route(c: Cluster) -> None:
    auth, users = c.fx.auth, c.fx.users
    for name in ("locked", "gone", "reset1"):
        await users.add_user(name, ["editor", "access"], [name], {}, "admin")
    locked, _ = await c.user_ctx("locked")
    gone, _ = await c.user_ctx("gone")
    pre_reset, _ = await c.user_ctx("reset1")
    for ctx in (locked, gone, pre_reset):  # all of them work before
        assert (await c.call(ctx, "GET", "/v1/whoami"))[0] == 200
    lock = Lock(metadata=Metadata(name="l1"), spec=LockSpec(target=LockTarget(user="locked")))
    await auth.create_resource(lock, "admin", force=False)
    await auth.delete_resource("user", "gone", "admin")
    await users.reset_user("reset1", "admin")
    everyone = {"user", "any", "host"}
    for ctx in (locked, gone, pre_reset):
        assert await _refused_everywhere(c, ctx, everyone) >= 30
    fresh, _ = await c.user_ctx("reset1")  # the reset user's next certificate works
    assert (await c.call(fresh, "GET", "/v1/whoami"))[0] == 200


async def test_certificate_kinds_fit_their_routes(c: Cluster) -> None:
    await c.fx.users.add_user("ed", ["editor", "access"], ["ed"], {}, "admin")
    user, _ = await c.user_ctx("ed")
    host = await c.host_ctx("web1")
    assert await _refused_everywhere(c, host, {"user"}) > 15
    # heartbeats (nodes, proxies), node pins, event submission, recording upload, and more
    host_routes = sum(1 for m, t in c.routes if audience_of(m, t) == "host")
    assert await _refused_everywhere(c, user, {"host"}) == host_routes >= 5
    assert (await c.call(host, "GET", "/v1/whoami"))[0] == 200


async def test_a_node_writes_its_own_record_only(c: Cluster) -> None:
    web1 = await c.host_ctx("web1")
    web2 = await c.host_ctx("web2")
    for name, ctx in (("web1", web1), ("web2", web2)):
        record = {"kind": "node", "metadata": {"name": name, "labels": {"env": "prod"}}}
        assert (await c.call(ctx, "POST", "/v1/nodes/heartbeat", json=record))[0] == 200
    theirs = resource_to_dict(await c.fx.auth.nodes.get("web2"))
    theirs["metadata"]["labels"] = {"env": "dev"}
    status, _ = await c.call(web1, "PUT", "/v1/resources/node/web2", json=theirs)
    assert status == 403
    assert (await c.fx.auth.nodes.get("web2")).metadata.labels == {"env": "prod"}
    mine = resource_to_dict(await c.fx.auth.nodes.get("web1"))
    mine["metadata"]["labels"] = {"env": "stage"}
    mine["spec"]["host_id"] = "someone-else"
    status, body = await c.call(web1, "PUT", "/v1/resources/node/web1", json=mine)
    assert status == 200, body
    stored = await c.fx.auth.nodes.get("web1")
    assert stored.metadata.labels == {"env": "stage"} and stored.spec.host_id != "someone-else"
    role = {"kind": "role", "metadata": {"name": "r"}, "spec": {}}
    assert (await c.call(web1, "POST", "/v1/resources/role", json=role))[0] == 403
    rejected = await c.fx.auth.audit.search(AuditQuery(types=("node.rejected",)))
    assert rejected and "web2" in str(rejected[0].target)


async def test_an_update_without_a_revision_is_a_clear_error_unless_forced(c: Cluster) -> None:
    await c.fx.users.add_user("ed", ["editor"], [], {}, "admin")
    ed, _ = await c.user_ctx("ed")
    role = {"kind": "role", "metadata": {"name": "dev"}, "spec": {}}
    assert (await c.call(ed, "POST", "/v1/resources/role", json=role))[0] == 201
    status, body = await c.call(ed, "PUT", "/v1/resources/role/dev", json=role)
    error = body["error"]
    assert status == 400 and isinstance(error, dict) and "revision" in str(error["message"])
    assert (await c.call(ed, "PUT", "/v1/resources/role/dev?force=true", json=role))[0] == 200


async def test_reset_takeover_with_the_old_certificate_and_cookie_is_refused(c: Cluster) -> None:
    """The attacker holds alice's certificate and web cookie; the admin resets alice. Neither
    may register a first device (which would then log in alone)."""
    await c.fx.users.add_user("alice", ["access"], ["alice"], {}, "admin")
    old_cert, identity = await c.user_ctx("alice")
    token = await WebSessions(c.fx.backend, c.fx.clock).create(identity, "password")
    await c.fx.users.reset_user("alice", "admin")
    status, _ = await c.call(old_cert, "POST", "/v1/mfa/devices/begin", json={"name": "evil"})
    assert status == 401
    status, _ = await c.call(
        old_cert,
        "POST",
        "/web/mfa/register/begin",
        json={"passkey": True},
        headers={"X-CSRF-Token": "t"},
        cookies={SESSION_COOKIE: token, "bastion_csrf": "t"},
    )
    assert status in (401, 403)
    assert await WebSessions(c.fx.backend, c.fx.clock).get(token) is None  # forgotten
