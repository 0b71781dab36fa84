"""Tests for bastion.auth.db_certs: routed user certificates and the db CA's leaves."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from bastion.audit.log import AuditQuery
from bastion.auth.db_certs import AGENT_CERT_TTL, DbCerts
from bastion.ca.x509 import identity_from_certificate
from bastion.errors import AccessDenied
from bastion.testing import make_auth, new_tls_key
from bastion.types.identity import Identity


def _ident(fx, **kw) -> Identity:  # type: ignore[no-untyped-def]
    base = {
        "cluster": "test.local",
        "user": "alice",
        "roles": ("dba",),
        "expires": fx.clock.now() + timedelta(hours=2),
    }
    return Identity(**{**base, **kw})


async def test_user_cert_carries_the_route_and_never_outlives_the_caller() -> None:
    fx = await make_auth()
    _, pub = new_tls_key()
    caller = _ident(fx)
    got = await DbCerts(fx.auth).user_cert(
        caller, pub, "orders", "reader", "orders", timedelta(hours=12), "1.2.3.4"
    )
    identity = identity_from_certificate(x509.load_pem_x509_certificate(got.cert_pem.encode()))
    assert identity.route is not None
    assert (identity.route.db_service, identity.route.db_user, identity.route.db_name) == (
        "orders",
        "reader",
        "orders",
    )
    assert identity.expires == caller.expires and got.expires == caller.expires
    assert identity.roles == caller.roles
    assert "BEGIN CERTIFICATE" in got.ca_pem  # the host CA: psql verifies the proxy with it


async def test_user_cert_refused_for_hosts() -> None:
    fx = await make_auth()
    _, pub = new_tls_key()
    with pytest.raises(AccessDenied):
        await DbCerts(fx.auth).user_cert(
            _ident(fx, kind="host", host_id="h"), pub, "db", "u", "d", timedelta(hours=1), ""
        )


async def test_agent_cert_for_db_agents_only() -> None:
    fx = await make_auth()
    _, pub = new_tls_key()
    certs = DbCerts(fx.auth)
    agent = _ident(fx, user="h1", kind="host", roles=("db",), host_id="h1")
    got = await certs.agent_cert(agent, "alice_db", pub, "local")
    cert = x509.load_pem_x509_certificate(got.cert_pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice_db"
    db_ca = await fx.auth.issuer.ca("db")
    assert got.ca_pem == db_ca.spec.active_keys[0].cert_pem
    assert got.expires - fx.clock.now() <= AGENT_CERT_TTL
    node = _ident(fx, user="h2", kind="host", roles=("node",), host_id="h2")
    with pytest.raises(AccessDenied, match="db role"):
        await certs.agent_cert(node, "alice_db", pub, "local")
    with pytest.raises(AccessDenied):
        await certs.agent_cert(_ident(fx), "alice_db", pub, "local")


async def test_server_cert_signed_by_db_ca_and_audited() -> None:
    fx = await make_auth()
    _, pub = new_tls_key()
    got = await DbCerts(fx.auth).server_cert(
        "db.internal", pub, ["db"], ["10.0.0.5"], timedelta(days=30), "admin", "1.2.3.4"
    )
    cert = x509.load_pem_x509_certificate(got.cert_pem.encode())
    ca = x509.load_pem_x509_certificate(got.ca_pem.encode())
    cert.verify_directly_issued_by(ca)
    events = await fx.auth.audit.search(AuditQuery(types=("cert.issued",)))
    assert any(e.fields.get("cert_type") == "db_server" for e in events)
