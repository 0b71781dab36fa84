"""Pure parts of the API client: connection errors read as a reason, not as object reprs."""

from __future__ import annotations

import asyncio
import socket

from bastion.client.api import AuthClient, connection_error_text
from bastion.errors import ConnectionProblem


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_is_a_short_reason() -> None:
    port = _closed_port()

    async def go() -> str:
        async with AuthClient(f"127.0.0.1:{port}", False) as client:
            try:
                await client.call("GET", "/v1/ping")
            except ConnectionProblem as exc:
                return exc.message
        raise AssertionError("no error")

    message = asyncio.run(go())
    assert f"cannot reach the server at 127.0.0.1:{port}: Connection refused;" in message
    assert "SSLContext object" not in message and "0x" not in message


def test_connection_error_text_of_other_errors() -> None:
    assert connection_error_text(TimeoutError()) == "timeout"
    assert connection_error_text(ConnectionResetError("reset by peer")) == "reset by peer"


def test_only_the_pinned_certificates_of_an_unverified_bundle_are_trusted() -> None:
    """A server in the middle that adds its own CA next to the real one (whose pin the user
    has) must not get its CA trusted along with it."""
    from bastion.ca import authority as ca_authority
    from bastion.client.api import pinned_certs, spki_pin_of_pem
    from bastion.clock import FakeClock

    def ca_pem(cluster: str) -> str:
        ca = ca_authority.new_cert_authority(
            "tls_host", cluster, "ed25519", b"\x01" * 32, FakeClock()
        )
        return "".join(k.cert_pem for k in ca.spec.trusted_keys())

    real, evil = ca_pem("real"), ca_pem("evil")
    bundle = evil + real
    (real_pin,) = spki_pin_of_pem(real)
    kept = pinned_certs(bundle, [real_pin.upper()])
    assert spki_pin_of_pem(kept) == [real_pin]
    assert pinned_certs(bundle, ["sha256:" + "0" * 64]) == ""
