"""Tests for ProxyListener._verify (bastion.proxy.listener): a client certificate verified on a
route is remembered by its DER bytes while valid, and verified afresh after the trust anchors
change (the TLS paths themselves run in tests/integration/test_proxy.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.ca import x509 as ca_x509
from bastion.ca.keys import generate_private_key, private_key_to_pem
from bastion.ca.x509 import issue_host_certificate, issue_user_certificate, self_signed_ca
from bastion.clock import FakeClock
from bastion.proxy import listener as listener_mod
from bastion.proxy.listener import ListenerConfig, ListenerDeps, ProxyListener, ProxyTLS
from bastion.proxy.router import Route
from bastion.types.audit import AuditEvent
from bastion.types.identity import Identity, RouteToTarget

START = datetime(2026, 1, 1, tzinfo=UTC)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _tls(user_ca: x509.Certificate) -> ProxyTLS:
    host_key = generate_private_key("ed25519")
    host_ca = self_signed_ca(host_key, "example host CA", "example", timedelta(days=30), now=START)
    proxy_key = generate_private_key("ed25519")
    proxy = issue_host_certificate(
        host_ca, host_key, proxy_key.public_key(), "proxy", ["localhost"], ["127.0.0.1"],
        START, START + timedelta(days=29),
    )  # fmt: skip
    return ProxyTLS(_pem(proxy), private_key_to_pem(proxy_key), _pem(user_ca), _pem(host_ca))


class _SSL:
    def __init__(self, der: bytes) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool) -> bytes:
        return self.der

    def selected_alpn_protocol(self) -> str | None:
        return Route.DB.alpn


class _Transport:
    def __init__(self, der: bytes) -> None:
        self.ssl = _SSL(der)
        self.aborted = False

    def get_extra_info(self, name: str) -> Any:
        return self.ssl if name == "ssl_object" else None

    def abort(self) -> None:
        self.aborted = True


class _Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    async def emit(
        self, event_type: str, *, outcome: str = "success", **fields: object
    ) -> AuditEvent | None:
        self.events.append((event_type, fields))
        return None


async def test_verified_certificates_are_remembered_until_the_anchors_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca_key = generate_private_key("ed25519")
    user_ca = self_signed_ca(ca_key, "example user CA", "example", timedelta(days=30), now=START)
    identity = Identity(
        cluster="example", user="alice", roles=("dev",), expires=START + timedelta(hours=1),
        route=RouteToTarget(db_service="pg", db_user="alice"),
    )  # fmt: skip
    cert = issue_user_certificate(
        user_ca, ca_key, generate_private_key("ed25519").public_key(), identity, not_before=START
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    clock = FakeClock(START + timedelta(minutes=1))
    audit = _Audit()
    tls = _tls(user_ca)
    listener = ProxyListener(
        ListenerConfig(port=0), ListenerDeps(tls=tls, clock=clock, audit=audit)
    )
    calls = []
    real = ca_x509.verify_leaf

    def counting(*args: Any, **kwargs: Any) -> ca_x509.VerifiedLeaf:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(listener_mod, "verify_leaf", counting)
    client = ("127.0.0.1", 5000)
    assert await listener._verify(_Transport(der), Route.DB, client) == (True, identity)  # type: ignore[arg-type]
    assert await listener._verify(_Transport(der), Route.DB, client) == (True, identity)  # type: ignore[arg-type]
    assert len(calls) == 1  # the second connection: remembered
    assert await listener._verify(_Transport(der), Route.SSH, client) == (False, None)  # type: ignore[arg-type]
    assert len(calls) == 1  # another route (its ALPN was not negotiated): not from the cache

    other_key = generate_private_key("ed25519")
    rotated = self_signed_ca(other_key, "example user CA", "example", timedelta(days=30), now=START)
    listener.use_tls(_tls(rotated))  # the old CA is no longer trusted: nothing remembered holds
    transport = _Transport(der)
    assert await listener._verify(transport, Route.DB, client) == (False, None)  # type: ignore[arg-type]
    assert transport.aborted and "signature" in str(audit.events[-1][1]["reason"])
    listener.use_tls(tls)
    assert await listener._verify(_Transport(der), Route.DB, client) == (True, identity)  # type: ignore[arg-type]
    assert len(calls) == 3  # verified afresh

    clock.advance(timedelta(hours=1))  # the identity expired: verified again, refused
    transport = _Transport(der)
    assert await listener._verify(transport, Route.DB, client) == (False, None)  # type: ignore[arg-type]
    assert transport.aborted and "expired" in str(audit.events[-1][1]["reason"])
    assert len(calls) == 4
