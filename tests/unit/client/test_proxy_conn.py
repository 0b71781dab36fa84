"""The route request/reply codec and the hand-over protocol, without sockets."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import pytest

from bastion.client.proxy_conn import (
    ALPN_SSH,
    RouteReplyProtocol,
    parse_route_reply,
    route_request,
    split_host_port,
    strip_cluster,
)
from bastion.errors import (
    AccessDenied,
    AuthenticationFailed,
    BastionError,
    ConnectionProblem,
    NotFound,
    RemoteProtocolError,
)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None
        self.paused = False
        self.aborted = False
        self.written = bytearray()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True

    def write(self, data: Any) -> None:
        self.written += data


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[Any] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append(("made", transport))

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))

    def eof_received(self) -> bool | None:
        self.events.append(("eof",))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))


def test_request_is_one_json_line() -> None:
    line = route_request("node1", "root", 22)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"node": "node1", "login": "root", "port": 22}
    assert ALPN_SSH == "bastion-ssh/1"


def test_ok_reply_passes() -> None:
    parse_route_reply(b'{"ok": true}')
    parse_route_reply(b'{"ok": true}\n')


@pytest.mark.parametrize(
    ("reply", "cls"),
    [
        ({"ok": False, "error": "node 'x' not found"}, NotFound),
        ({"ok": False, "error": "access denied"}, AccessDenied),
        ({"ok": False, "error": "node x is offline"}, ConnectionProblem),
        ({"ok": False, "error": "timed out"}, ConnectionProblem),
        ({"ok": False, "error": "cannot connect to node n at h:22: refused"}, ConnectionProblem),
        ({"ok": False, "error": "certificate expired"}, AuthenticationFailed),
        ({"ok": False, "error": "whatever", "code": "access_denied"}, AccessDenied),
        ({"ok": False, "error": "odd"}, BastionError),
    ],
)
def test_refusals_map_to_the_error_tree(reply: dict[str, Any], cls: type[BastionError]) -> None:
    with pytest.raises(cls) as info:
        parse_route_reply(json.dumps(reply).encode())
    assert info.value.message.startswith(reply["error"])
    assert type(info.value) is cls


@pytest.mark.parametrize("line", [b"SSH-2.0-OpenSSH_9", b"[1]", b'{"ok": "yes"}', b"\xff"])
def test_garbage_reply_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_route_reply(line)


async def test_bytes_after_the_reply_reach_the_next_protocol() -> None:
    transport = FakeTransport()
    proto = RouteReplyProtocol()
    transport.set_protocol(proto)
    proto.connection_made(transport)
    proto.data_received(b'{"ok"')
    assert not proto.reply.done()
    proto.data_received(b": true}\nSSH-2.0-node\r\n")  # banner in the same record
    assert await proto.reply == b'{"ok": true}'
    assert transport.paused
    proto.data_received(b"more")  # arrives before the hand-over: kept, in order
    nxt = Recorder()
    proto.hand_over(nxt)
    assert transport.protocol is nxt
    assert nxt.events == [("made", transport), ("data", b"SSH-2.0-node\r\nmore")]
    assert not transport.paused


async def test_eof_and_loss_before_the_hand_over_are_replayed() -> None:
    transport = FakeTransport()
    proto = RouteReplyProtocol()
    proto.connection_made(transport)
    proto.data_received(b'{"ok": true}\n')
    proto.eof_received()
    proto.connection_lost(None)
    nxt = Recorder()
    proto.hand_over(nxt)
    assert nxt.events == [("made", transport), ("eof",), ("lost", None)]


async def test_close_before_reply_is_a_connection_problem() -> None:
    proto = RouteReplyProtocol()
    proto.connection_made(FakeTransport())
    proto.connection_lost(None)
    with pytest.raises(ConnectionProblem, match="before answering"):
        await proto.reply


async def test_tls_alert_before_reply_says_run_bsh_login() -> None:
    proto = RouteReplyProtocol()
    proto.connection_made(FakeTransport())
    proto.connection_lost(ssl.SSLError(1, "sslv3 alert certificate expired"))
    with pytest.raises(AuthenticationFailed, match="run bsh login"):
        await proto.reply


async def test_endless_reply_line_is_cut() -> None:
    transport = FakeTransport()
    proto = RouteReplyProtocol()
    proto.connection_made(transport)
    proto.data_received(b"x" * 20000)
    with pytest.raises(RemoteProtocolError, match="too long"):
        await proto.reply
    assert transport.aborted


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("node1.test.local", "node1"),
        ("NODE1.TEST.LOCAL", "NODE1"),
        ("node1", "node1"),
        ("test.local", "test.local"),
        ("node1.other", "node1.other"),
    ],
)
def test_strip_cluster(host: str, expected: str) -> None:
    assert strip_cluster(host, "test.local") == expected


def test_split_host_port() -> None:
    assert split_host_port("127.0.0.1:3080") == ("127.0.0.1", 3080)
    assert split_host_port("proxy.example") == ("proxy.example", 3080)
    assert split_host_port("[::1]:443") == ("::1", 443)
