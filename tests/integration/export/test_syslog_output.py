"""The syslog output against a real TCP/TLS collector on loopback."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable

import pytest
from exportkit import make_event

from bastion.errors import ConnectionProblem
from bastion.export.syslog_output import SyslogOutput, tls_client_context
from bastion.testing.peers.export import Pki, SyslogCollector, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_context(pki: Pki, require_client: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client:
        ctx.load_verify_locations(pki.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def test_tcp_delivers_framed_messages() -> None:
    collector = SyslogCollector()
    port = await collector.start()
    out = SyslogOutput("127.0.0.1", port, hostname="auth-1")
    events = [make_event(n) for n in range(3)]
    await out.send(events)
    await until(lambda: len(collector.messages) == 3)
    assert [json.loads(m.split(b"] ", 1)[1])["id"] for m in collector.messages] == [
        e.id for e in events
    ]
    assert collector.messages[0].startswith(b"<86>1 2026-11-24T12:00:00.123456Z auth-1 bastion")
    await out.close()
    await collector.stop()


async def test_reconnects_after_receiver_restart() -> None:
    collector = SyslogCollector()
    port = await collector.start()
    out = SyslogOutput("127.0.0.1", port, timeout=2)
    await out.send([make_event(0)])
    await until(lambda: len(collector.messages) == 1)
    await collector.stop()
    with pytest.raises(ConnectionProblem):
        # The receiver closed our connection and refuses new ones.
        await asyncio.sleep(0.05)
        await out.send([make_event(1)])
    collector.port = port
    await collector.start()
    await out.send([make_event(2)])
    await until(lambda: len(collector.messages) == 2)
    await out.close()
    await collector.stop()


async def test_tls_verifies_and_presents_client_cert(pki: Pki) -> None:
    collector = SyslogCollector(tls=server_context(pki, require_client=True))
    port = await collector.start()
    ctx = tls_client_context(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    out = SyslogOutput("127.0.0.1", port, tls=ctx, server_name="localhost")
    await out.send([make_event(0)])
    await until(lambda: len(collector.messages) == 1)
    subject = dict(x[0] for x in collector.peer_certs[0]["subject"])
    assert subject["commonName"] == "bastion-exporter"
    await out.close()
    await collector.stop()


async def test_tls_refuses_an_untrusted_receiver(pki: Pki) -> None:
    collector = SyslogCollector(tls=server_context(pki))
    port = await collector.start()
    out = SyslogOutput("127.0.0.1", port, tls=tls_client_context(str(pki.other_ca)))
    with pytest.raises(ConnectionProblem, match="certificate"):
        await out.send([make_event(0)])
    wrong_name = SyslogOutput(
        "127.0.0.1", port, tls=tls_client_context(str(pki.ca)), server_name="siem.example"
    )
    with pytest.raises(ConnectionProblem, match="[Hh]ostname"):
        await wrong_name.send([make_event(0)])
    assert collector.messages == []
    await collector.stop()


async def test_unreachable_is_connection_problem() -> None:
    collector = SyslogCollector()
    port = await collector.start()
    await collector.stop()
    with pytest.raises(ConnectionProblem, match="cannot reach"):
        await SyslogOutput("127.0.0.1", port).send([make_event(0)])
