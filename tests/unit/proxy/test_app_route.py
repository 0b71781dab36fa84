import asyncio

from bastion.proxy.app_route import COOKIE, _strip_cookie


def test_our_cookie_never_reaches_the_app():
    assert _strip_cookie(f"a=1; {COOKIE}=secret; b=2") == "a=1; b=2"
    assert _strip_cookie(f"{COOKIE}=secret") == ""
    assert COOKIE.startswith("__Host-")  # host-only, Secure, Path=/: bound to the app's host


class _Transport(asyncio.Transport):
    """Enough of an asyncio transport for the app route (no sockets)."""

    def __init__(self) -> None:
        super().__init__()
        self.out = b""
        self.closed = False

    def set_protocol(self, protocol):
        self.protocol = protocol

    def write(self, data):
        self.out += data

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True

    def get_write_buffer_size(self):
        return 0


async def test_a_proxy_in_its_own_process_refuses_app_hosts_with_one_line():
    from bastion.clock import FakeClock
    from bastion.live.registry import LiveRegistry
    from bastion.proxy.app_route import STANDALONE_REFUSAL, AppRoute

    class Audit:
        async def emit(self, *args, **fields):
            return None

    route = AppRoute.refusing("proxy.test", Audit(), LiveRegistry(), FakeClock())
    await route.start()
    transport = _Transport()
    request = b"GET /admin HTTP/1.1\r\nHost: grafana.proxy.test\r\n\r\n"
    await route.handle(transport, None, ("127.0.0.1", 5), request, "grafana")
    head, _, body = transport.out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert body.decode() == STANDALONE_REFUSAL + "\n" and "\n" not in STANDALONE_REFUSAL
    await route.close()


class _Session:
    def __init__(self, identity):
        self.identity = identity
        self.expires = identity.expires
        self.id = "sess1"


class _Access:
    """The app backend: one session token, one app reached through an agent's tunnel."""

    def __init__(self, identity):
        from bastion.types.apps import App, AppHeader, AppRewrite, AppSpec
        from bastion.types.meta import Metadata

        self.signed = 0
        self.app = App(
            metadata=Metadata(name="grafana"),
            spec=AppSpec(
                uri="http://10.0.0.5:3000",
                host_id="agent1",
                rewrite=AppRewrite(headers=[AppHeader(name="X-App", value="grafana")]),
            ),
        )
        session = _Session(identity)

        class Sessions:
            async def get(self, token, app):
                return session if (token, app) == ("tok", "grafana") else None

        self.sessions = Sessions()

    async def authorize(self, identity, name):
        return self.app

    async def assertion(self, identity, app):
        self.signed += 1
        return f"jwt{self.signed}"


class _App(_Transport):
    """The app at the far end of the tunnel: answers each request head it is sent."""

    def __init__(self, protocol):
        super().__init__()
        self.protocol = protocol
        self.heads: list[bytes] = []

    def write(self, data):
        self.heads.append(data)
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-From: app\r\n\r\nhi"
        asyncio.get_running_loop().call_soon(self.protocol.data_received, answer)


class _Tunnel:
    def __init__(self):
        self.apps: list[_App] = []

    async def dial(self, host_id, header, protocol_factory):
        protocol = protocol_factory()
        app = _App(protocol)
        protocol.connection_made(app)
        self.apps.append(app)
        return app


class _Events:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    async def emit(self, event_type, *, outcome="success", **fields):
        self.events.append((event_type, fields))

    async def emit_many(self, specs):
        self.events += [(t, dict(f)) for t, _, f in specs]


async def _serve(requests: bytes, sample: float = 1.0, mode: str = "all"):
    from datetime import timedelta

    from bastion.clock import FakeClock
    from bastion.live.registry import LiveRegistry
    from bastion.proxy.app_audit import RequestAudit
    from bastion.proxy.app_route import AppRoute, AppRouteDeps
    from bastion.types.identity import Identity

    clock = FakeClock()
    alice = Identity(cluster="c", user="alice", expires=clock.now() + timedelta(hours=1))
    access, tunnel, events = _Access(alice), _Tunnel(), _Events()
    route = AppRoute(
        AppRouteDeps(
            access=access,
            domain="proxy.test",
            audit=events,
            registry=LiveRegistry(),
            clock=clock,
            tunnel=tunnel,
            audit_requests=mode,
            audit_request_sample=sample,
        )
    )
    route._requests = RequestAudit(events, flush_interval=0)  # no real waits here
    await route.start()
    client = _Transport()
    task = asyncio.ensure_future(route.handle(client, None, ("192.0.2.7", 5), requests, "grafana"))
    for _ in range(200):
        await asyncio.sleep(0)
        if client.out.count(b"HTTP/1.1 ") >= requests.count(b" HTTP/1.1\r\n"):
            break
    client.protocol.eof_received()
    await task
    await route.close()
    return client.out, [h for app in tunnel.apps for h in app.heads], events.events


def _get(path: str, extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: grafana.proxy.test\r\n"
        f"Cookie: a=1; __Host-bastion_app_session=tok\r\nX-Forwarded-User: root\r\n"
        f"Bastion-Jwt-Assertion: forged\r\n{extra}\r\n"
    ).encode()


async def test_repeated_request_heads_are_forwarded_rewritten_every_time():
    # The same header section three times (taken over from the last parse and the last
    # rewrite), then a different one: every forwarded head is the full rewrite.
    out, heads, _ = await _serve(
        _get("/a") + _get("/b?x=1") + _get("/a") + _get("/c", "X-B: 2\r\n")
    )
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 4 and out.count(b"\r\n\r\nhi") == 4
    assert out.count(b"\r\nX-From: app\r\nContent-Length: 2\r\n") == 4  # the head made once
    assert [h.split(b"\r\n", 1)[0] for h in heads] == [
        b"GET /a HTTP/1.1",
        b"GET /b?x=1 HTTP/1.1",
        b"GET /a HTTP/1.1",
        b"GET /c HTTP/1.1",
    ]
    for head in heads:
        assert b"forged" not in head and b"root" not in head and b"tok" not in head
        assert b"\r\nBastion-Jwt-Assertion: jwt1\r\n" in head
        assert b"\r\nX-Forwarded-For: 192.0.2.7\r\n" in head
        assert b"\r\nX-App: grafana\r\n" in head and b"\r\nCookie: a=1\r\n" in head
        assert head.endswith(b"\r\n\r\n")
    assert heads[0].split(b"\r\n", 1)[1] == heads[2].split(b"\r\n", 1)[1]
    assert b"\r\nX-B: 2\r\n" in heads[3] and b"X-B" not in heads[0]


async def test_sampled_reads_and_every_write_are_audited_and_say_the_rate():
    post = (
        b"POST /w HTTP/1.1\r\nHost: grafana.proxy.test\r\n"
        b"Cookie: __Host-bastion_app_session=tok\r\nContent-Length: 1\r\n\r\nx"
    )
    _, _, events = await _serve(_get("/a") * 30 + post, sample=0.000001)
    requests = [f for t, f in events if t == "app.request"]
    assert [f["method"] for f in requests] == ["POST"]  # reads sampled away (all but surely)
    assert "sample_rate" not in requests[0]
    _, _, events = await _serve(_get("/a") * 3, sample=0.999999)
    requests = [f for t, f in events if t == "app.request"]
    assert all(f["sample_rate"] == 0.999999 for f in requests) and requests


class _SlowAccess(_Access):
    """Authorization and signing take a round trip (they yield), as they do for real."""

    def __init__(self, identity):
        super().__init__(identity)
        self.authorized = 0

    async def authorize(self, identity, name):
        self.authorized += 1
        await asyncio.sleep(0)
        return self.app

    async def assertion(self, identity, app):
        await asyncio.sleep(0)
        return await super().assertion(identity, app)


async def _serve_concurrently(access, connections: int, now, monkeypatch) -> list[bytes]:
    """``connections`` clients of one session each send one GET at the same time, once at
    each monotonic time of ``now``."""
    from bastion.clock import FakeClock
    from bastion.live.registry import LiveRegistry
    from bastion.proxy import app_route
    from bastion.proxy.app_route import AppRoute, AppRouteDeps

    route = AppRoute(
        AppRouteDeps(
            access=access, domain="proxy.test", audit=_Events(), registry=LiveRegistry(),
            clock=FakeClock(), tunnel=_Tunnel(), audit_requests="none",
        )
    )  # fmt: skip
    await route.start()
    outs = []
    for when in now:
        clock = type("Monotonic", (), {"monotonic": staticmethod(lambda w=when: w)})
        monkeypatch.setattr(app_route, "time", clock)  # the route's clock only, not the loop's
        clients = [_Transport() for _ in range(connections)]
        tasks = [
            asyncio.ensure_future(route.handle(c, None, ("192.0.2.7", 5), _get("/a"), "grafana"))
            for c in clients
        ]
        for _ in range(200):
            await asyncio.sleep(0)
            if all(b"HTTP/1.1 " in c.out for c in clients):
                break
        for c in clients:
            c.protocol.eof_received()
        await asyncio.gather(*tasks)
        outs += [c.out for c in clients]
    await route.close()
    return outs


async def test_connections_of_a_session_share_one_admission_and_one_signing(monkeypatch):
    from datetime import timedelta

    from bastion.clock import FakeClock
    from bastion.types.identity import Identity

    expires = FakeClock().now() + timedelta(hours=1)
    access = _SlowAccess(Identity(cluster="c", user="alice", expires=expires))
    # t=100: first admission; t=100.5: cached; t=102: stale, decided once for all 20
    # connections; t=131: the assertion is 31 s old: renewed aside while the current one
    # (valid for 29 s more) is sent; t=131.1: cached, the renewed one.
    times = [100.0, 100.5, 102.0, 131.0, 131.1]
    outs = await _serve_concurrently(access, 20, times, monkeypatch)
    assert len(outs) == 100 and all(o.startswith(b"HTTP/1.1 200 OK") for o in outs)
    assert access.authorized == 3  # not once per connection
    assert access.signed == 2
