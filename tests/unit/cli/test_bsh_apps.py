from pathlib import Path

from click.testing import CliRunner

from bastion.cli.bsh_apps import apps_group, curl_flags


def test_curl_flags():
    line = curl_flags(Path("/p/apps/grafana"), "grafana.proxy.test:3080")
    assert line == (
        "curl --cert /p/apps/grafana.crt --key /p/apps/grafana.key "
        "--cacert /p/apps/grafana.ca https://grafana.proxy.test:3080/"
    )


def test_help_lists_the_commands():
    out = CliRunner().invoke(apps_group, ["--help"]).output
    assert all(c in out for c in ("ls", "login", "config", "logout"))


def test_mfa_cert_answers_with_a_totp_code(monkeypatch):
    from types import SimpleNamespace

    from bastion.cli import bsh_apps
    from bastion.contract.apps import AppCert, AppMfaChallenge

    sent = []

    def send(profile, endpoint, body=None, **_):
        sent.append((endpoint, body))
        if endpoint is bsh_apps.APP_MFA_CHALLENGE:
            return AppMfaChallenge(mfa_required=body.app == "admin", scope="app:admin", totp=True)
        return AppCert(cert="C", ca="A", expires="soon", public_addr="admin.p")

    monkeypatch.setattr(bsh_apps, "profile_send", send)
    monkeypatch.setattr(bsh_apps.click, "prompt", lambda *a, **k: " 123456 ")
    profile = SimpleNamespace(proxy="p:3080", path=Path("/nowhere"))
    assert bsh_apps._mfa_cert(profile, "grafana", "PUB", False) is None
    reply = bsh_apps._mfa_cert(profile, "admin", "PUB", True)
    assert reply is not None and reply.cert == "C"
    request = sent[-1][1]
    assert request.otp == "123456" and request.mfa_response is None and request.app == "admin"


def test_rewrite_head_sets_the_apps_host() -> None:
    from bastion.cli.bsh_apps import rewrite_head
    from bastion.protocols.http1 import parse_request_head

    head = parse_request_head(b"GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n\r\n")
    out = rewrite_head(head, b"grafana.proxy.test:3080")
    assert out == (b"GET /a?b=1 HTTP/1.1\r\nHost: grafana.proxy.test:3080\r\nAccept: */*\r\n\r\n")


async def test_the_http_forwarder_rewrites_each_request_and_copies_bodies() -> None:
    import asyncio

    from bastion.cli.bsh_apps import _forward_requests

    class Sink:
        def __init__(self) -> None:
            self.data = b""
            self.eof = False

        def write(self, data: bytes) -> None:
            self.data += data

        async def drain(self) -> None:
            return None

        def can_write_eof(self) -> bool:
            return True

        def write_eof(self) -> None:
            self.eof = True

    reader = asyncio.StreamReader()
    reader.feed_data(
        b"POST /up HTTP/1.1\r\nHost: localhost:1\r\nContent-Length: 5\r\n\r\nhello"
        b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    reader.feed_eof()
    sink = Sink()
    await _forward_requests(reader, sink, b"app.p:3080")  # type: ignore[arg-type]
    assert sink.data == (
        b"POST /up HTTP/1.1\r\nHost: app.p:3080\r\nContent-Length: 5\r\n\r\nhello"
        b"PUT /c HTTP/1.1\r\nHost: app.p:3080\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: app.p:3080\r\n\r\n"
    )
    assert sink.eof
