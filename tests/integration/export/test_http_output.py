"""The HEC and ``_bulk`` outputs against a real HTTP(S) receiver on loopback."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from exportkit import make_event

from bastion.errors import ConnectionProblem, RemoteProtocolError
from bastion.export.http_output import HttpOutput, auth_headers
from bastion.testing.peers.export import HttpReceiver, make_pki


@pytest.fixture
async def receiver() -> AsyncIterator[HttpReceiver]:
    rx = HttpReceiver()
    await rx.start()
    yield rx
    await rx.stop()


def hec(rx: HttpReceiver, token: str = "test-token") -> HttpOutput:
    return HttpOutput(
        f"{rx.url}/services/collector/event",
        "splunk_hec",
        headers=auth_headers("splunk_hec", token=token),
    )


async def test_hec_delivers_batches(receiver: HttpReceiver) -> None:
    out = hec(receiver)
    events = [make_event(n) for n in range(5)]
    await out.send(events[:3])
    await out.send(events[3:])
    await out.close()
    assert receiver.ids() == [e.id for e in events]
    assert receiver.requests == 2


async def test_hec_bad_token_and_outage(receiver: HttpReceiver) -> None:
    with pytest.raises(RemoteProtocolError, match="Invalid token"):
        await hec(receiver, token="wrong").send([make_event(0)])
    receiver.fail_status = 503
    out = hec(receiver)
    with pytest.raises(RemoteProtocolError, match="HTTP 503"):
        await out.send([make_event(0)])
    await receiver.stop()
    with pytest.raises(ConnectionProblem, match="splunk_hec receiver"):
        await out.send([make_event(0)])
    await out.close()
    assert receiver.documents == []


async def test_bulk_checks_every_item(receiver: HttpReceiver) -> None:
    out = HttpOutput(f"{receiver.url}/_bulk", "elasticsearch")
    events = [make_event(n) for n in range(3)]
    await out.send(events)
    assert receiver.ids() == [e.id for e in events]
    receiver.reject_ids = {make_event(4).id}
    with pytest.raises(RemoteProtocolError, match=r"stored 1 of 2 events; first rejected: 0+4"):
        await out.send([make_event(3), make_event(4)])
    receiver.fail_status = 429
    with pytest.raises(RemoteProtocolError, match="HTTP 429"):
        await out.send([make_event(5)])
    await out.close()


async def test_bulk_auth_headers_reach_receiver() -> None:
    seen: list[str] = []

    async def bulk(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"errors": False, "items": [{"index": {"status": 201}}]})

    app = web.Application()
    app.router.add_post("/_bulk", bulk)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    for headers in (
        auth_headers("elasticsearch", username="elastic", password="pw"),
        auth_headers("elasticsearch", api_key="aWQ6a2V5"),
        auth_headers("elasticsearch"),
    ):
        out = HttpOutput(f"http://127.0.0.1:{port}/_bulk", "elasticsearch", headers=headers)
        await out.send([make_event(0)])
        await out.close()
    await runner.cleanup()
    assert seen == [
        "Basic " + base64.b64encode(b"elastic:pw").decode(),
        "ApiKey aWQ6a2V5",
        "",
    ]


async def test_https_verifies_receiver(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)

    async def hec_ok(request: web.Request) -> web.Response:
        return web.json_response({"text": "Success", "code": 0})

    app = web.Application()
    app.router.add_post("/services/collector/event", hec_ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"https://localhost:{port}/services/collector/event"
    headers = auth_headers("splunk_hec", token="t")
    good = HttpOutput(
        url, "splunk_hec", headers=headers, tls=ssl.create_default_context(cafile=pki.ca)
    )
    await good.send([make_event(0)])
    await good.close()
    bad = HttpOutput(
        url, "splunk_hec", headers=headers, tls=ssl.create_default_context(cafile=pki.other_ca)
    )
    with pytest.raises(ConnectionProblem, match="certificate"):
        await bad.send([make_event(0)])
    await bad.close()
    await runner.cleanup()
