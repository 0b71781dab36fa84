"""The database-access API (:mod:`bastion.contract.db`), served over :mod:`bastion.auth.db_certs`.

Layer: ``api`` (the HTTP edge: parsing and serialising only). The gate has admitted the caller
by the endpoint's audience; the server certificate needs ``cert_authority:update`` like
``bctl auth sign``.
"""

from __future__ import annotations

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.auth.databases import DatabaseInventory
from bastion.auth.db_certs import DbCertificate, DbCerts
from bastion.auth.db_session import DbSessionCerts
from bastion.auth.server import AuthServer
from bastion.contract import db as c
from bastion.contract.base import Empty, ResourceDoc
from bastion.errors import BadParameter
from bastion.types.database import Database

__all__ = ["add_db_routes"]


def _reply(cert: DbCertificate) -> c.DbCert:
    return c.DbCert(cert=cert.cert_pem, ca=cert.ca_pem, expires=cert.expires.isoformat())


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise BadParameter(f"labels: expected key=value, got {part[:100]!r}")
        out[key.strip()] = value.strip()
    return out


def add_db_routes(app: web.Application, auth: AuthServer) -> None:
    certs = DbCerts(auth)
    inventory = DatabaseInventory(auth)

    async def heartbeat(call: Call[ResourceDoc]) -> ResourceDoc:
        db = call.body.root
        if not isinstance(db, Database):
            raise BadParameter("a database heartbeat carries a db resource")
        return ResourceDoc(await inventory.heartbeat(db, call.guard.ctx.identity, call.remote))

    async def list_dbs(call: Call[Empty]) -> c.DbList:
        wanted = _labels(call.query(c.DbListQuery).labels)
        found = await inventory.visible(call.guard.ctx.role_set, wanted)
        return c.DbList(
            items=[
                c.DbInfo(
                    name=v.database.name,
                    protocol=v.database.spec.protocol,
                    labels=v.database.all_labels(),
                    db_users=list(v.db_users),
                    db_names=list(v.db_names),
                    online=bool(v.database.spec.host_id and v.database.metadata.expires),
                    mysql_server_version=v.database.spec.mysql_server_version,
                )
                for v in found
            ]
        )

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
                call.peer_key_sha256,
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

    sessions = DbSessionCerts(auth, auth.mfa)

    async def session_challenge(call: Call[c.DbSessionTarget]) -> c.DbSessionChallenge:
        b, ctx = call.body, call.guard.ctx
        answer = await sessions.challenge(
            ctx.identity, ctx.role_set, b.db_service, b.db_user, b.db_name, call.remote
        )
        return c.DbSessionChallenge.model_validate(answer)

    async def session_cert(call: Call[c.DbSessionIssue]) -> c.DbCert:
        b, ctx = call.body, call.guard.ctx
        got = await sessions.issue(
            ctx.identity, ctx.role_set, b.db_service, b.db_user, b.db_name, b.public_key,
            b.mfa_response, call.remote,
        )  # fmt: skip
        return c.DbCert(cert=got.cert_pem, ca=got.ca_pem, expires=got.expires.isoformat())

    bind(app, c.DB_SESSION_CHALLENGE, session_challenge)
    bind(app, c.DB_SESSION_CERT, session_cert)
    bind(app, c.DB_USER_CERT, user_cert)
    bind(app, c.DB_SERVER_CERT, server_cert)
    bind(app, c.DB_AGENT_CERT, agent_cert)
    bind(app, c.DB_HEARTBEAT, heartbeat)
    bind(app, c.DB_LIST, list_dbs)
