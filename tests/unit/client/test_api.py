"""Pure parts of the API client: connection errors read as a reason, not as object reprs."""

from __future__ import annotations

from bastion.client.api import connection_error_text


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
