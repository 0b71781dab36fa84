"""The database-access API (:mod:`bastion.contract.db`), served over :mod:`bastion.auth.db_certs`.

Layer: ``api`` (the HTTP edge: parsing and serialising only). The gate has admitted the caller
by the endpoint's audience; the server certificate needs ``cert_authority:update`` like
``bctl auth sign``.
"""

from __future__ import annotations

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.auth.db_certs import DbCertificate, DbCerts
from bastion.auth.server import AuthServer
from bastion.contract import db as c

__all__ = ["add_db_routes"]


def _reply(cert: DbCertificate) -> c.DbCert:
    return c.DbCert(cert=cert.cert_pem, ca=cert.ca_pem, expires=cert.expires.isoformat())


def add_db_routes(app: web.Application, auth: AuthServer) -> None:
    certs = DbCerts(auth)

    async def user_cert(call: Call[c.DbUserCertRequest]) -> c.DbCert:
        b = call.body
        return _reply(
            await certs.user_cert(
                call.guard.ctx.identity,
                b.public_key,
                b.db_service,
                b.db_user,
                b.db_name,
                b.ttl,
                call.remote,
            )
        )

    async def server_cert(call: Call[c.DbServerCertRequest]) -> c.DbCert:
        b = call.body
        await call.guard.require("cert_authority", "update")
        return _reply(
            await certs.server_cert(
                b.host,
                b.public_key,
                b.dns_names,
                b.ip_addresses,
                b.ttl,
                call.guard.ctx.actor,
                call.remote,
            )
        )

    async def agent_cert(call: Call[c.DbAgentCertRequest]) -> c.DbCert:
        b = call.body
        return _reply(
            await certs.agent_cert(call.guard.ctx.identity, b.db_user, b.public_key, call.remote)
        )

    bind(app, c.DB_USER_CERT, user_cert)
    bind(app, c.DB_SERVER_CERT, server_cert)
    bind(app, c.DB_AGENT_CERT, agent_cert)
