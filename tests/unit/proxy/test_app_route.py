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
